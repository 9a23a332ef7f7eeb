//! afl.rs fuzzer for `tke_fuzz::pkcs11_uri` (see crates/tke-fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| tke_fuzz::pkcs11_uri(data));
}
