//! afl.rs fuzzer for `tke_fuzz::certificate` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::certificate(data));
}
