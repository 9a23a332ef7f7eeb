//! Text that a server (or a fleet file) supplies is untrusted: a unit's location, a
//! server's error message and code. Before such text can reach a terminal, every
//! character that is not plain visible text is written as a visible escape, so that it
//! cannot clear or repaint the screen, move the cursor, start a new line that looks like
//! our own output, or reorder what is shown.

use std::borrow::Cow;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Whether `c` is written as an escape by [`sanitize`]: control characters (Cc: C0, DEL,
/// C1, so ESC, CSI and line breaks), format characters (Cf: zero-width characters,
/// bidirectional overrides and isolates) and the line and paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// `text` with each [unsafe](is_unsafe) character written as `\u{XX}` (its code point in
/// hexadecimal), the rest unchanged: one line of visible text. Borrowed when nothing
/// needed escaping.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_can_paint_a_terminal() {
        assert!(matches!(sanitize("[z].[h].[01].[01]"), Cow::Borrowed(_)));
        assert_eq!(sanitize("Zoë 李"), "Zoë 李");
        assert_eq!(
            sanitize("a\u{1b}[2J\nAll crypto units are configured identically.\r"),
            "a\\u{1b}[2J\\u{a}All crypto units are configured identically.\\u{d}"
        );
        for c in [
            '\u{0}', '\t', '\u{7f}', '\u{85}', '\u{9b}', '\u{200b}', '\u{202e}', '\u{2066}',
            '\u{feff}', '\u{2028}', '\u{2029}',
        ] {
            let s = sanitize(&format!("x{c}y")).into_owned();
            assert!(!s.contains(c), "{c:?}");
            assert!(s.chars().all(|c| !is_unsafe(c)), "{s:?}");
        }
    }
}
