//! afl.rs fuzzer for `tke_fuzz::ceremony_file` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::ceremony_file(data));
}
