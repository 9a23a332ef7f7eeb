//! RFC 7512 PKCS#11 URIs: which module, which token, which key.
//!
//! ```text
//! pkcs11:token=admins;object=alice?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/tke/admins.pin
//! ```
//!
//! A small, strict parser of the part of RFC 7512 that administrator keys need:
//!
//! | attribute | where | meaning |
//! | --- | --- | --- |
//! | `token` | path | the token label (`CK_TOKEN_INFO.label`) |
//! | `serial` | path | the token serial number |
//! | `manufacturer`, `model` | path | further token filters |
//! | `object` | path | the key label (`CKA_LABEL`) |
//! | `id` | path | the key id (`CKA_ID`), percent-encoded bytes |
//! | `type` | path | `private` or `public` (both name the key pair); other types are refused |
//! | `module-path` | query | the PKCS#11 module (absolute path); required |
//! | `pin-source` | query | a file holding the user PIN: `file:/path` or `/path` |
//! | `pin-value` | query | **refused**: PINs never go in URIs, hence never on a command line |
//!
//! Values are percent-decoded (`%2F`); characters outside RFC 7512's `pk11-pchar` /
//! `pk11-qchar` must be percent-encoded. Each attribute may appear once. Tokens are found
//! by label and/or serial, never by slot number, so `slot-id` is refused, as are
//! `module-name` (give `module-path`), the `library-*` and `slot-*` attributes and
//! vendor (`x-`) attributes. Errors give the byte position and never repeat a value, so a
//! PIN typed in the wrong place is not echoed.

use core::fmt;
use std::path::{Path, PathBuf};

/// What a URI's `type` attribute names. Both name an administrator key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// `type=private`: the private key of the pair.
    Private,
    /// `type=public`: the public key of the pair.
    Public,
}

impl ObjectType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }
}

/// Which component of the URI an error is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriPart {
    /// The path: `;`-separated attributes after `pkcs11:`.
    Path,
    /// The query: `&`-separated attributes after `?`.
    Query,
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Path => "path",
            Self::Query => "query",
        })
    }
}

/// Why a PKCS#11 URI was refused. Messages give positions (0-based byte offsets) and
/// attribute names, never attribute values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI: it must start with `pkcs11:` (RFC 7512)")]
    NotPkcs11,
    /// A `#fragment` is not part of a PKCS#11 URI.
    #[error("the PKCS#11 URI has a `#` at byte {position}; RFC 7512 URIs have no fragment (percent-encode it as %23)")]
    Fragment {
        /// Where the `#` is.
        position: usize,
    },
    /// An empty attribute (`;;`, a trailing `;`, `?` with nothing after it, `&&`).
    #[error("the PKCS#11 URI has an empty attribute in its {part} at byte {position}")]
    EmptyAttribute {
        /// Path or query.
        part: UriPart,
        /// Where the empty attribute is.
        position: usize,
    },
    /// An attribute without `=`.
    #[error(
        "the attribute at byte {position} of the PKCS#11 URI's {part} has no `=`: write NAME=VALUE"
    )]
    MissingEquals {
        /// Path or query.
        part: UriPart,
        /// Where the attribute starts.
        position: usize,
    },
    /// An attribute name that is not lower-case letters, digits and `-`.
    #[error("the attribute name at byte {position} of the PKCS#11 URI is not valid (lower-case letters, digits and `-`)")]
    InvalidName {
        /// Where the name starts.
        position: usize,
    },
    /// An attribute this parser does not know, or a standard one in the wrong component.
    #[error("the PKCS#11 URI's {part} has an attribute `{name}` that TKE does not accept; path: token, serial, manufacturer, model, object, id, type; query: module-path, pin-source")]
    UnknownAttribute {
        /// The attribute's name.
        name: String,
        /// Path or query.
        part: UriPart,
    },
    /// A standard RFC 7512 attribute that TKE refuses on purpose.
    #[error("the PKCS#11 URI attribute `{name}` is not supported: {advice}")]
    Unsupported {
        /// The attribute.
        name: &'static str,
        /// What to write instead.
        advice: &'static str,
    },
    /// The URI carries a PIN.
    #[error(
        "the PKCS#11 URI carries a PIN (`pin-value`), which is refused: PINs never go in URIs or \
         on a command line. Give it in a file (`pin-source=file:/path`, mode 0600), in the \
         --secrets file, or at the prompt"
    )]
    PinValue,
    /// An attribute appears twice.
    #[error("the PKCS#11 URI gives `{name}` more than once")]
    Duplicate {
        /// The attribute.
        name: &'static str,
    },
    /// A character that must be percent-encoded, or a `%` not followed by two hex digits.
    #[error("the value of `{name}` in the PKCS#11 URI is badly encoded at byte {position}: characters other than letters, digits and -._~:[]@!$'()*+,= (and &;/?| where allowed) must be percent-encoded as %XX")]
    Encoding {
        /// The attribute.
        name: &'static str,
        /// Where the bad character is.
        position: usize,
    },
    /// A text attribute that does not decode to UTF-8.
    #[error("the value of `{name}` in the PKCS#11 URI is not UTF-8 once percent-decoded")]
    NotUtf8 {
        /// The attribute.
        name: &'static str,
    },
    /// An attribute with an empty value.
    #[error("`{name}` is empty in the PKCS#11 URI")]
    EmptyValue {
        /// The attribute.
        name: &'static str,
    },
    /// `type` names something other than a key of the pair.
    #[error("`type` in the PKCS#11 URI must be `private` or `public` (an administrator key pair)")]
    ObjectType,
    /// `pin-source` is in a form TKE does not read.
    #[error("`pin-source` in the PKCS#11 URI must be `file:/absolute/path` or `/absolute/path` (commands such as `|prog` are not run)")]
    PinSource,
    /// `module-path` is missing.
    #[error(
        "the PKCS#11 URI has no `module-path`: add `?module-path=/path/to/the/vendor/module.so`"
    )]
    NoModulePath,
    /// `module-path` is relative.
    #[error("`module-path` in the PKCS#11 URI must be an absolute path to the module file")]
    RelativeModulePath,
    /// Neither `token` nor `serial`.
    #[error("the PKCS#11 URI names no token: add `token=LABEL` and/or `serial=SERIAL` (tokens are never chosen by slot number)")]
    NoToken,
}

/// A parsed PKCS#11 URI naming a module, a token (by label and/or serial) and usually a
/// key (by label and/or id). It never holds a PIN.
///
/// `Display` writes the canonical form (attributes in a fixed order, values
/// percent-encoded where needed, `id` always as `%XX` bytes), which [`Pkcs11Uri::parse`]
/// reads back to an equal value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pkcs11Uri {
    token: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    object: Option<String>,
    object_type: Option<ObjectType>,
    id: Option<Vec<u8>>,
    module_path: PathBuf,
    pin_source: Option<PathBuf>,
}

const PATH_EXTRA: &[u8] = b":[]@!$'()*+,=&";
const QUERY_EXTRA: &[u8] = b":[]@!$'()*+,=/?|";

fn allowed(b: u8, part: UriPart) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'.' | b'_' | b'~')
        || match part {
            UriPart::Path => PATH_EXTRA.contains(&b),
            UriPart::Query => QUERY_EXTRA.contains(&b),
        }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `value`, which starts at byte `start` of the URI.
fn decode(
    name: &'static str,
    value: &str,
    start: usize,
    part: UriPart,
) -> Result<Vec<u8>, UriError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => {
                    return Err(UriError::Encoding {
                        name,
                        position: start + i,
                    })
                }
            }
            i += 3;
        } else if allowed(b, part) {
            out.push(b);
            i += 1;
        } else {
            return Err(UriError::Encoding {
                name,
                position: start + i,
            });
        }
    }
    if out.is_empty() {
        return Err(UriError::EmptyValue { name });
    }
    Ok(out)
}

fn decode_text(
    name: &'static str,
    value: &str,
    start: usize,
    part: UriPart,
) -> Result<String, UriError> {
    String::from_utf8(decode(name, value, start, part)?).map_err(|_| UriError::NotUtf8 { name })
}

fn encode(out: &mut String, bytes: &[u8], part: UriPart) {
    for &b in bytes {
        // RFC 7512 allows a raw `&` in path values, but tools that split a whole URI at
        // `&` misread it: encode it there too.
        if allowed(b, part) && !(part == UriPart::Path && b == b'&') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Splits `s` (which starts at byte `base` of the URI) at `sep`, with each piece's offset.
fn split_at(s: &str, sep: char, base: usize) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = base;
    s.split(sep).map(move |piece| {
        let at = offset;
        offset += piece.len() + 1;
        (at, piece)
    })
}

#[derive(Default)]
struct Builder {
    token: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    object: Option<String>,
    object_type: Option<ObjectType>,
    id: Option<Vec<u8>>,
    module_path: Option<PathBuf>,
    pin_source: Option<PathBuf>,
}

fn set<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::Duplicate { name });
    }
    *slot = Some(value);
    Ok(())
}

/// Splits `NAME=VALUE` (starting at byte `at`) and checks the name's characters.
fn name_value(piece: &str, at: usize, part: UriPart) -> Result<(&str, &str, usize), UriError> {
    if piece.is_empty() {
        return Err(UriError::EmptyAttribute { part, position: at });
    }
    let Some(eq) = piece.find('=') else {
        return Err(UriError::MissingEquals { part, position: at });
    };
    let name = &piece[..eq];
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(UriError::InvalidName { position: at });
    }
    Ok((name, &piece[eq + 1..], at + eq + 1))
}

fn refused(name: &str) -> Option<UriError> {
    let (name, advice) = match name {
        "slot-id" => (
            "slot-id",
            "tokens are found by label (token=) and/or serial (serial=), never by slot number, which changes when tokens are added",
        ),
        "slot-description" | "slot-manufacturer" => (
            if name == "slot-description" { "slot-description" } else { "slot-manufacturer" },
            "find the token by label (token=) and/or serial (serial=)",
        ),
        "library-manufacturer" | "library-description" | "library-version" => (
            match name {
                "library-manufacturer" => "library-manufacturer",
                "library-description" => "library-description",
                _ => "library-version",
            },
            "name the module by its file with module-path=",
        ),
        "module-name" => ("module-name", "give the module's file with module-path=/path/to/module.so"),
        _ => return None,
    };
    Some(UriError::Unsupported { name, advice })
}

impl Builder {
    fn path_attr(&mut self, piece: &str, at: usize) -> Result<(), UriError> {
        let part = UriPart::Path;
        let (name, value, vat) = name_value(piece, at, part)?;
        match name {
            "token" => set(
                &mut self.token,
                "token",
                decode_text("token", value, vat, part)?,
            ),
            "manufacturer" => set(
                &mut self.manufacturer,
                "manufacturer",
                decode_text("manufacturer", value, vat, part)?,
            ),
            "serial" => set(
                &mut self.serial,
                "serial",
                decode_text("serial", value, vat, part)?,
            ),
            "model" => set(
                &mut self.model,
                "model",
                decode_text("model", value, vat, part)?,
            ),
            "object" => set(
                &mut self.object,
                "object",
                decode_text("object", value, vat, part)?,
            ),
            "id" => set(&mut self.id, "id", decode("id", value, vat, part)?),
            "type" => {
                let t = match decode_text("type", value, vat, part)?.as_str() {
                    "private" => ObjectType::Private,
                    "public" => ObjectType::Public,
                    _ => return Err(UriError::ObjectType),
                };
                set(&mut self.object_type, "type", t)
            }
            _ => Err(refused(name).unwrap_or_else(|| UriError::UnknownAttribute {
                name: name.to_owned(),
                part,
            })),
        }
    }

    fn query_attr(&mut self, piece: &str, at: usize) -> Result<(), UriError> {
        let part = UriPart::Query;
        let (name, value, vat) = name_value(piece, at, part)?;
        match name {
            // Checked before the value is even decoded: nothing of it is kept or shown.
            "pin-value" => Err(UriError::PinValue),
            "module-path" => {
                let p = PathBuf::from(decode_text("module-path", value, vat, part)?);
                if !p.is_absolute() {
                    return Err(UriError::RelativeModulePath);
                }
                set(&mut self.module_path, "module-path", p)
            }
            "pin-source" => {
                let s = decode_text("pin-source", value, vat, part)?;
                let path = s
                    .strip_prefix("file://")
                    .or_else(|| s.strip_prefix("file:"))
                    .unwrap_or(&s);
                let path = Path::new(path);
                if !path.is_absolute() {
                    return Err(UriError::PinSource);
                }
                set(&mut self.pin_source, "pin-source", path.to_path_buf())
            }
            _ => Err(refused(name).unwrap_or_else(|| UriError::UnknownAttribute {
                name: name.to_owned(),
                part,
            })),
        }
    }
}

impl Pkcs11Uri {
    /// Parses a PKCS#11 URI (see the module documentation for what is accepted).
    ///
    /// # Errors
    /// A [`UriError`] naming the attribute and position at fault.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        const SCHEME: &str = "pkcs11:";
        let rest = match uri.get(..SCHEME.len()) {
            Some(s) if s.eq_ignore_ascii_case(SCHEME) => &uri[SCHEME.len()..],
            _ => return Err(UriError::NotPkcs11),
        };
        let base = SCHEME.len();
        // `pin-value` is refused wherever it is, before any other error could be reported
        // about the rest of the URI.
        if let Some(q) = rest.find('?') {
            if rest[q + 1..]
                .split('&')
                .any(|a| a == "pin-value" || a.starts_with("pin-value="))
            {
                return Err(UriError::PinValue);
            }
        }
        if let Some(i) = rest.find('#') {
            return Err(UriError::Fragment { position: base + i });
        }
        let (path, query) = match rest.find('?') {
            Some(i) => (&rest[..i], Some((&rest[i + 1..], base + i + 1))),
            None => (rest, None),
        };
        let mut b = Builder::default();
        if !path.is_empty() {
            for (at, piece) in split_at(path, ';', base) {
                b.path_attr(piece, at)?;
            }
        }
        if let Some((query, qbase)) = query {
            for (at, piece) in split_at(query, '&', qbase) {
                b.query_attr(piece, at)?;
            }
        }
        if b.token.is_none() && b.serial.is_none() {
            return Err(UriError::NoToken);
        }
        let module_path = b.module_path.ok_or(UriError::NoModulePath)?;
        Ok(Self {
            token: b.token,
            manufacturer: b.manufacturer,
            serial: b.serial,
            model: b.model,
            object: b.object,
            object_type: b.object_type,
            id: b.id,
            module_path,
            pin_source: b.pin_source,
        })
    }

    /// The token label (`token=`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
    /// The token serial number (`serial=`).
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }
    /// The token manufacturer (`manufacturer=`).
    pub fn manufacturer(&self) -> Option<&str> {
        self.manufacturer.as_deref()
    }
    /// The token model (`model=`).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// The key label (`object=`).
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }
    /// The key id (`id=`), decoded.
    pub fn id(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }
    /// `type=`, if given.
    pub fn object_type(&self) -> Option<ObjectType> {
        self.object_type
    }
    /// The PKCS#11 module file (`module-path=`).
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }
    /// The file holding the user PIN (`pin-source=`), if given.
    pub fn pin_source(&self) -> Option<&Path> {
        self.pin_source.as_deref()
    }

    /// The same URI naming the key with this id too (`id=`).
    #[must_use]
    pub fn with_id(mut self, id: &[u8]) -> Self {
        self.id = (!id.is_empty()).then(|| id.to_vec());
        self
    }

    /// The same URI with the key label `object=`.
    #[must_use]
    pub fn with_object(mut self, label: &str) -> Self {
        self.object = Some(label.to_owned());
        self
    }

    /// The same URI without `pin-source`.
    #[must_use]
    pub fn without_pin_source(mut self) -> Self {
        self.pin_source = None;
        self
    }

    /// The token the URI names, as a query for [`tke_pkcs11::Module::find_token`].
    pub fn token_query(&self) -> tke_pkcs11::TokenQuery {
        tke_pkcs11::TokenQuery {
            label: self.token.clone(),
            serial: self.serial.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
        }
    }

    /// How the token is named, for messages: `token "admins" (serial 1234)`.
    pub fn token_description(&self) -> String {
        self.token_query().to_string()
    }

    /// How the key is named, for messages: `key "alice" (id 01ab)`.
    pub fn key_description(&self) -> String {
        let hex = |id: &[u8]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match (&self.object, &self.id) {
            (Some(l), Some(id)) => format!("key {l:?} (id {})", hex(id)),
            (Some(l), None) => format!("key {l:?}"),
            (None, Some(id)) => format!("the key with id {}", hex(id)),
            (None, None) => "no key".to_owned(),
        }
    }
}

impl core::str::FromStr for Pkcs11Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        Self::parse(s)
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let attr = |name: &str, bytes: &[u8], part: UriPart| {
            let mut s = format!("{name}=");
            encode(&mut s, bytes, part);
            s
        };
        for (name, v) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
            ("object", &self.object),
        ] {
            if let Some(v) = v {
                path.push(attr(name, v.as_bytes(), UriPart::Path));
            }
        }
        if let Some(t) = self.object_type {
            path.push(format!("type={}", t.as_str()));
        }
        if let Some(id) = &self.id {
            let mut s = "id=".to_owned();
            for b in id {
                s.push_str(&format!("%{b:02X}"));
            }
            path.push(s);
        }
        let mut query = vec![attr(
            "module-path",
            self.module_path.to_string_lossy().as_bytes(),
            UriPart::Query,
        )];
        if let Some(p) = &self.pin_source {
            // `file://` and the path (RFC 8089, empty authority): what the parser strips, so
            // a path that starts with several slashes prints back to itself.
            let mut s = "pin-source=file://".to_owned();
            encode(&mut s, p.to_string_lossy().as_bytes(), UriPart::Query);
            query.push(s);
        }
        write!(f, "pkcs11:{}?{}", path.join(";"), query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "module-path=/usr/lib/softhsm/libsofthsm2.so";

    fn p(s: &str) -> Result<Pkcs11Uri, UriError> {
        Pkcs11Uri::parse(s)
    }

    #[test]
    fn parses_the_usual_form() {
        let u = p(&format!(
            "pkcs11:token=admins;object=alice?{M}&pin-source=file:/run/tke/admins.pin"
        ))
        .unwrap();
        assert_eq!(u.token(), Some("admins"));
        assert_eq!(u.object(), Some("alice"));
        assert_eq!(u.serial(), None);
        assert_eq!(u.id(), None);
        assert_eq!(
            u.module_path(),
            Path::new("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin_source(), Some(Path::new("/run/tke/admins.pin")));
    }

    #[test]
    fn parses_every_accepted_attribute_and_percent_decodes() {
        let u = p(&format!(
            "PKCS11:token=My%20token%25;serial=DECC0401648;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;object=a;b=c;id=%01%02%ab%FF;type=private?{M}&pin-source=/tmp/pin"
        ));
        // `b=c` is not an attribute: the object label cannot hold a raw `;`.
        assert_eq!(
            u.unwrap_err(),
            UriError::UnknownAttribute {
                name: "b".into(),
                part: UriPart::Path
            }
        );
        let u = p(&format!(
            "PKCS11:token=My%20token%25;serial=DECC0401648;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;object=a%3Bb=c;id=%01%02%ab%FF;type=private?{M}&pin-source=/tmp/pin"
        ))
        .unwrap();
        assert_eq!(u.token(), Some("My token%"));
        assert_eq!(u.serial(), Some("DECC0401648"));
        assert_eq!(u.manufacturer(), Some("SoftHSM project"));
        assert_eq!(u.model(), Some("SoftHSM v2"));
        assert_eq!(u.object(), Some("a;b=c"));
        assert_eq!(u.id(), Some(&[1u8, 2, 0xab, 0xff][..]));
        assert_eq!(u.object_type(), Some(ObjectType::Private));
        assert_eq!(u.pin_source(), Some(Path::new("/tmp/pin")));
    }

    #[test]
    fn reserved_characters_allowed_by_rfc_7512_need_no_encoding() {
        let u = p("pkcs11:token=:[]@!$'()*+,=&?module-path=/m/p.so?x|y").unwrap();
        assert_eq!(u.token(), Some(":[]@!$'()*+,=&"));
        assert_eq!(u.module_path(), Path::new("/m/p.so?x|y"));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let s = format!(
            "pkcs11:object=K%20%26%3B;type=public;id=%00%7f;token=T%C3%A9?pin-source=file:///p/in&{M}"
        );
        let u = p(&s).unwrap();
        let text = u.to_string();
        assert_eq!(
            text,
            "pkcs11:token=T%C3%A9;object=K%20%26%3B;type=public;id=%00%7F?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:///p/in"
        );
        assert_eq!(p(&text).unwrap(), u);
        // A path that starts with several slashes prints back to itself (found by
        // fuzzing: `file:` + `///x` reparsed as `/x`).
        let u = p(&format!("pkcs11:token=t?{M}&pin-source=file://///x")).unwrap();
        assert_eq!(u.pin_source(), Some(Path::new("///x")));
        assert_eq!(p(&u.to_string()).unwrap().to_string(), u.to_string());
        let plain = p(&format!("pkcs11:serial=42?{M}")).unwrap();
        assert_eq!(plain.to_string(), format!("pkcs11:serial=42?{M}"));
        assert_eq!(p(&plain.to_string()).unwrap(), plain);
    }

    #[test]
    fn builders_and_descriptions() {
        let u = p(&format!("pkcs11:token=admins;serial=77?{M}&pin-source=/x"))
            .unwrap()
            .with_object("bob")
            .with_id(&[0xab, 1])
            .without_pin_source();
        assert_eq!(u.object(), Some("bob"));
        assert_eq!(u.id(), Some(&[0xab, 1][..]));
        assert_eq!(u.pin_source(), None);
        assert_eq!(u.token_description(), "token \"admins\" (serial 77)");
        assert_eq!(u.key_description(), "key \"bob\" (id ab01)");
        assert_eq!(u.clone().with_id(&[]).id(), None);
    }

    #[test]
    fn pin_value_is_refused_without_echoing_it() {
        for s in [
            format!("pkcs11:token=a;object=b?{M}&pin-value=123456"),
            format!("pkcs11:token=a?pin-value=123456&{M}"),
            // Even when the rest of the URI is also wrong.
            "pkcs11:slot-id=3;token=a?pin-value=123456".to_owned(),
            format!("pkcs11:token=a?{M}&pin-value"),
        ] {
            let e = p(&s).unwrap_err();
            assert_eq!(e, UriError::PinValue, "{s}");
            let msg = e.to_string();
            assert!(
                !msg.contains("123456") && !format!("{e:?}").contains("123456"),
                "{msg}"
            );
            assert!(
                msg.contains("pin-source") && msg.contains("--secrets"),
                "{msg}"
            );
        }
    }

    #[test]
    fn slot_numbers_and_module_names_are_refused_with_advice() {
        let e = p(&format!("pkcs11:slot-id=0;object=a?{M}")).unwrap_err();
        assert!(matches!(
            e,
            UriError::Unsupported {
                name: "slot-id",
                ..
            }
        ));
        assert!(e.to_string().contains("never by slot number"), "{e}");
        let e = p("pkcs11:token=a?module-name=softhsm2").unwrap_err();
        assert!(matches!(
            e,
            UriError::Unsupported {
                name: "module-name",
                ..
            }
        ));
        for a in [
            "library-version=1",
            "library-manufacturer=x",
            "library-description=x",
            "slot-description=x",
            "slot-manufacturer=x",
        ] {
            assert!(
                matches!(
                    p(&format!("pkcs11:token=a;{a}?{M}")),
                    Err(UriError::Unsupported { .. })
                ),
                "{a}"
            );
        }
    }

    #[test]
    fn strictness() {
        let cases: &[(&str, UriError)] = &[
            ("pkcs12:token=a", UriError::NotPkcs11),
            ("pkcs1", UriError::NotPkcs11),
            ("", UriError::NotPkcs11),
            ("pkcs11:token=a#frag", UriError::Fragment { position: 14 }),
            (
                "pkcs11:token=a;;object=b",
                UriError::EmptyAttribute {
                    part: UriPart::Path,
                    position: 15,
                },
            ),
            (
                "pkcs11:token=a;",
                UriError::EmptyAttribute {
                    part: UriPart::Path,
                    position: 15,
                },
            ),
            (
                "pkcs11:token=a?",
                UriError::EmptyAttribute {
                    part: UriPart::Query,
                    position: 15,
                },
            ),
            (
                "pkcs11:token=a;object",
                UriError::MissingEquals {
                    part: UriPart::Path,
                    position: 15,
                },
            ),
            ("pkcs11:Token=a", UriError::InvalidName { position: 7 }),
            ("pkcs11:=a", UriError::InvalidName { position: 7 }),
            (
                "pkcs11:token=a;token=b",
                UriError::Duplicate { name: "token" },
            ),
            (
                "pkcs11:token=a b",
                UriError::Encoding {
                    name: "token",
                    position: 14,
                },
            ),
            (
                "pkcs11:token=a%2",
                UriError::Encoding {
                    name: "token",
                    position: 14,
                },
            ),
            (
                "pkcs11:token=%zz",
                UriError::Encoding {
                    name: "token",
                    position: 13,
                },
            ),
            (
                "pkcs11:token=a/b",
                UriError::Encoding {
                    name: "token",
                    position: 14,
                },
            ),
            (
                "pkcs11:token=a?module-path=/x&y",
                UriError::MissingEquals {
                    part: UriPart::Query,
                    position: 30,
                },
            ),
            ("pkcs11:token=%ff", UriError::NotUtf8 { name: "token" }),
            ("pkcs11:token=", UriError::EmptyValue { name: "token" }),
            ("pkcs11:token=a;type=cert", UriError::ObjectType),
            (
                "pkcs11:token=a;x-vendor=1",
                UriError::UnknownAttribute {
                    name: "x-vendor".into(),
                    part: UriPart::Path,
                },
            ),
            (
                "pkcs11:token=a?object=b",
                UriError::UnknownAttribute {
                    name: "object".into(),
                    part: UriPart::Query,
                },
            ),
            ("pkcs11:token=a", UriError::NoModulePath),
            (
                "pkcs11:token=a?module-path=libsofthsm2.so",
                UriError::RelativeModulePath,
            ),
            (
                "pkcs11:token=a?module-path=/m&pin-source=|cat%20/pin",
                UriError::PinSource,
            ),
            (
                "pkcs11:token=a?module-path=/m&pin-source=rel/pin",
                UriError::PinSource,
            ),
            ("pkcs11:object=a?module-path=/m", UriError::NoToken),
            ("pkcs11:?module-path=/m", UriError::NoToken),
        ];
        for (s, want) in cases {
            assert_eq!(&p(s).unwrap_err(), want, "{s}");
            // Every message is one readable sentence about the URI.
            assert!(p(s).unwrap_err().to_string().contains("URI"), "{s}");
        }
    }

    #[test]
    fn errors_never_repeat_values() {
        let secretish = "S3cr3tValue";
        for s in [
            format!("pkcs11:token=a;{secretish}"),
            format!("pkcs11:token={secretish} x"),
            format!("pkcs11:token=a?module-path=/m&pin-source=|{secretish}"),
            format!("pkcs11:token=a;type={secretish}"),
        ] {
            let e = p(&s).unwrap_err();
            assert!(
                !e.to_string().contains(secretish) && !format!("{e:?}").contains(secretish),
                "{e}"
            );
        }
    }
}
