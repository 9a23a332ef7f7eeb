//! The BER-TLV subset that PIV uses: one- or two-byte tags (`7F49`, `5F..`), definite
//! lengths in short form or `81 xx` / `82 xx xx`.

/// One TLV: its tag (one or two bytes, as a number) and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag: `0x7C`, or `0x7F49` for two-byte tags.
    pub tag: u16,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Why bytes are not a TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    /// The input ends inside a tag, length or value.
    #[error("truncated TLV")]
    Truncated,
    /// A length form PIV does not use (indefinite, or more than two length bytes).
    #[error("unsupported TLV length form")]
    Length,
}

/// Parses one TLV at the start of `input`; returns it and the bytes after it.
///
/// # Errors
/// [`TlvError`] for truncated input or an unsupported length form.
pub fn parse(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let (&first, rest) = input.split_first().ok_or(TlvError::Truncated)?;
    // Two-byte tags: the low five bits of the first byte are all ones.
    let (tag, rest) = if first & 0x1f == 0x1f {
        let (&second, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
        (u16::from_be_bytes([first, second]), rest)
    } else {
        (u16::from(first), rest)
    };
    let (&l0, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
    let (len, rest) = match l0 {
        0..=0x7f => (usize::from(l0), rest),
        0x81 => {
            let (&l, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
            (usize::from(l), rest)
        }
        0x82 => match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => return Err(TlvError::Truncated),
        },
        _ => return Err(TlvError::Length),
    };
    if rest.len() < len {
        return Err(TlvError::Truncated);
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Parses a sequence of TLVs that fills `input` exactly.
///
/// # Errors
/// [`TlvError`] when any element is malformed.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = parse(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// Appends the length bytes of a value of `len` bytes.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        let l = u16::try_from(len).unwrap_or(u16::MAX);
        out.push(0x82);
        out.extend_from_slice(&l.to_be_bytes());
    }
}

/// Appends one TLV.
pub fn push(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    if tag > 0xff {
        out.extend_from_slice(&tag.to_be_bytes());
    } else {
        out.push(tag as u8);
    }
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// One TLV as a new vector.
pub fn encode(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    push(&mut out, tag, value);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_every_length_form() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0x3000] {
            let value = vec![0xa5; len];
            for tag in [0x53u16, 0x7f49] {
                let enc = encode(tag, &value);
                let (tlv, rest) = parse(&enc).unwrap();
                assert_eq!(tlv.tag, tag);
                assert_eq!(tlv.value, &value[..]);
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn rejects_truncated_and_indefinite() {
        assert_eq!(parse(&[0x53]), Err(TlvError::Truncated));
        assert_eq!(parse(&[0x53, 0x02, 0x00]), Err(TlvError::Truncated));
        assert_eq!(parse(&[0x53, 0x80]), Err(TlvError::Length));
        assert_eq!(parse(&[0x53, 0x83, 0, 0, 1]), Err(TlvError::Length));
        assert_eq!(parse(&[0x7f]), Err(TlvError::Truncated));
    }

    #[test]
    fn parse_all_reads_a_sequence() {
        let v = parse_all(&[0x80, 0x00, 0x81, 0x02, 1, 2]).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].value, &[1, 2]);
    }
}
