//! afl.rs fuzzer for `tke_fuzz::http_head` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::http_head(data));
}
