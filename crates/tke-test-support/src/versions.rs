//! Units of another protocol version, for the tests that show them refused: a query's
//! answer signed the way version 1, 2 or 3 signs it (`docs/protocol.md` §10.1).

use tke_proto::{
    der::{asn1::OctetString, Encode},
    p256::ecdsa::{signature::Signer as _, DerSignature, SigningKey},
    ControlPoints, Digest32, RegisterStatus, ResponseBody, SignedResponse, UnitId, UnitStatus,
    UnitType,
};

/// The DER `SignedResponse` of operational unit `unit`, fresh and in imprint mode,
/// answering the query `request_der`, signed by `device_key` as protocol `version` does:
/// 1 over the bare body, 2 over the version 2 label and the body, any other value as the
/// current version (its label and the body).
///
/// # Panics
/// Not expected: every value encodes.
pub fn imprint_answer(
    unit: UnitId,
    device_key: &SigningKey,
    request_der: &[u8],
    version: u32,
) -> Vec<u8> {
    let status = UnitStatus {
        unit_id: unit,
        unit_type: UnitType::Operational,
        counter: 0,
        sig_threshold: 0,
        rev_threshold: 0,
        admins: Vec::new(),
        new_register: RegisterStatus::EMPTY,
        current_register: RegisterStatus::EMPTY,
        importer_pending: false,
        control_points: ControlPoints::DEFAULT,
    };
    let encoded = |r: Result<Vec<u8>, tke_proto::der::Error>| {
        r.unwrap_or_else(|e| panic!("encoding an answer: {e}"))
    };
    let body = ResponseBody {
        unit_id: unit,
        counter: 0,
        request_hash: Digest32::sha256(request_der),
        return_code: 0,
        reason_code: 0,
        output: OctetString::new(encoded(status.to_der()))
            .unwrap_or_else(|e| panic!("encoding an answer: {e}")),
    };
    let signed = SignedResponse::sign(&body, |context, m| {
        let sig: DerSignature = device_key.sign(&context.signed_bytes_of_version(version, m));
        Ok(sig)
    })
    .unwrap_or_else(|e| panic!("signing an answer: {e}"));
    encoded(signed.to_der())
}
