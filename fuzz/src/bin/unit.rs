//! afl.rs fuzzer for `tke_fuzz::unit` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::unit(data));
}
