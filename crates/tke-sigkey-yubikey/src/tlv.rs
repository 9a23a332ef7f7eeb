//! The BER-TLV subset PIV uses: one- or two-byte tags, lengths up to `82 xx xx`.

/// Splits the first TLV off `input`: (tag, value, rest).
pub(crate) fn parse(input: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    let (tag, rest) = if first & 0x1f == 0x1f {
        let (&second, rest) = rest.split_first()?;
        (u16::from_be_bytes([first, second]), rest)
    } else {
        (u16::from(first), rest)
    };
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = match l0 {
        0..=0x7f => (usize::from(l0), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let (l, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), rest)
        }
        _ => return None,
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

/// The value of the first top-level TLV tagged `tag` in `input`.
pub(crate) fn find(mut input: &[u8], tag: u16) -> Option<&[u8]> {
    while !input.is_empty() {
        let (t, v, rest) = parse(input)?;
        if t == tag {
            return Some(v);
        }
        input = rest;
    }
    None
}

/// Appends one TLV.
pub(crate) fn push(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    if tag > 0xff {
        out.extend_from_slice(&tag.to_be_bytes());
    } else {
        out.push(tag as u8);
    }
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    }
    out.extend_from_slice(value);
}

/// One TLV.
pub(crate) fn encode(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 4);
    push(&mut v, tag, value);
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_find() {
        for len in [0usize, 5, 0x80, 0x1ff] {
            let v = vec![7u8; len];
            let mut all = encode(0x01, &[1]);
            push(&mut all, 0x7f49, &v);
            assert_eq!(find(&all, 0x7f49), Some(v.as_slice()));
            assert_eq!(find(&all, 0x01), Some(&[1u8][..]));
            assert_eq!(find(&all, 0x02), None);
        }
        assert!(parse(&[0x53, 0x05, 1]).is_none());
        assert!(parse(&[0x53, 0x83, 0, 0, 1]).is_none());
    }
}
