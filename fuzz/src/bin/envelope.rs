//! afl.rs fuzzer for `tke_fuzz::envelope` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::envelope(data));
}
