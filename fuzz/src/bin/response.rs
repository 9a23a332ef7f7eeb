//! afl.rs fuzzer for `tke_fuzz::response` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::response(data));
}
