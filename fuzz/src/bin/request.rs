//! afl.rs fuzzer for `tke_fuzz::request` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::request(data));
}
