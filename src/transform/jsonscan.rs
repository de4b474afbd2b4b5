//! A strict, borrowing JSON scanner for documents whose shape the caller knows (a usage page):
//! the caller walks objects and arrays it cares about and takes every other value as raw text, so
//! nothing is materialized and each byte is looked at about once (strings eight bytes at a time);
//! numbers keep every digit (their text is returned as written).
//!
//! Everything it accepts is valid JSON (RFC 8259: string escapes, no raw control characters,
//! number grammar, literals, nesting at most [`MAX_DEPTH`] deep); the input is `&str`, so UTF-8 is
//! already checked. Errors name the byte offset.

use std::borrow::Cow;

/// Deeper nesting is refused (a hostile page cannot exhaust the stack).
pub const MAX_DEPTH: usize = 128;

/// A value as it stands in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw<'a> {
    /// A string without escapes: its contents, quotes stripped.
    Str(&'a str),
    /// A string with escapes: its whole text, quotes included (unescape with [`Raw::text`]).
    Escaped(&'a str),
    /// A number, literal, object or array: its text as written.
    Other(&'a str),
}

impl<'a> Raw<'a> {
    /// The value's text: strings unescaped (borrowed when they hold no escape), anything else as
    /// written.
    pub fn text(self) -> Result<Cow<'a, str>> {
        match self {
            Raw::Str(s) | Raw::Other(s) => Ok(Cow::Borrowed(s)),
            Raw::Escaped(s) => sonic_rs::from_str::<String>(s)
                .map(Cow::Owned)
                .map_err(|e| format!("bad string: {e}")),
        }
    }
}

pub struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

pub type Result<T> = std::result::Result<T, String>;

impl<'a> Scanner<'a> {
    pub fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            pos: 0,
        }
    }

    fn err<T>(&self, what: &str) -> Result<T> {
        match self.b.get(self.pos) {
            Some(&c) if c.is_ascii_graphic() => Err(format!(
                "{what} at byte {}, found `{}`",
                self.pos, c as char
            )),
            Some(_) => Err(format!("{what} at byte {}", self.pos)),
            None => Err(format!("{what} at byte {} (end of input)", self.pos)),
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.pos).copied()
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.err("trailing characters"),
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }

    /// The string starting at the cursor (`"` expected), as [`Raw::Str`] or [`Raw::Escaped`].
    /// Escapes and the absence of control characters are checked.
    #[inline]
    fn string(&mut self) -> Result<Raw<'a>> {
        let start = self.pos;
        if self.b.get(start) != Some(&b'"') {
            return self.err("expected a string");
        }
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            i = special(self.b, i);
            match self.b.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match self.b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u')
                            if self
                                .b
                                .get(i + 2..i + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            i += 6
                        }
                        _ => {
                            self.pos = i;
                            return self.err("bad escape in string");
                        }
                    }
                }
                Some(_) => {
                    self.pos = i;
                    return self.err("control character in string");
                }
                None => {
                    self.pos = i;
                    return self.err("unterminated string");
                }
            }
        }
        self.pos = i + 1;
        Ok(if escaped {
            Raw::Escaped(&self.s[start..=i])
        } else {
            Raw::Str(&self.s[start + 1..i])
        })
    }

    /// An object key and its `:`; keys with escapes are unescaped.
    #[inline]
    fn key(&mut self) -> Result<Cow<'a, str>> {
        self.ws();
        let key = self.string()?;
        self.expect(b':', "expected `:`")?;
        key.text()
    }

    /// Walks the object at the cursor: `member(self, key)` must consume each member's value.
    pub fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        self.container(depth, [b'{', b'}'], |s| {
            let k = s.key()?;
            member(s, k)
        })
    }

    /// Walks the array at the cursor: `element(self)` must consume each element.
    pub fn array(
        &mut self,
        depth: usize,
        element: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.container(depth, [b'[', b']'], element)
    }

    /// `open`, then items separated by `,` (`item` consumes one), then `close`.
    fn container(
        &mut self,
        depth: usize,
        [open, close]: [u8; 2],
        mut item: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        let what = if open == b'{' {
            "an object"
        } else {
            "an array"
        };
        if self.peek() != Some(open) {
            return self.err(&format!("expected {what}"));
        }
        self.pos += 1;
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err(&format!("expected `,` or `{}`", close as char)),
            }
        }
    }

    /// The value at the cursor, checked and taken as it stands.
    #[inline]
    pub fn value(&mut self, depth: usize) -> Result<Raw<'a>> {
        match self.peek() {
            Some(b'"') => self.string(),
            _ => {
                let a = self.pos;
                self.skip(depth)?;
                Ok(Raw::Other(&self.s[a..self.pos]))
            }
        }
    }

    /// Skips the value at the cursor, checking it.
    pub fn skip(&mut self, depth: usize) -> Result<()> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.object(depth + 1, |s, _| s.skip(depth + 1)),
            Some(b'[') => self.array(depth + 1, |s| s.skip(depth + 1)),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expected a value"),
        }
    }

    /// `null` at the cursor (consumed) or not (nothing consumed).
    pub fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.literal(b"null").is_ok() {
            return true;
        }
        false
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("expected `true`, `false` or `null`")
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<()> {
        let b = self.b;
        let mut i = self.pos;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        let n = digits(&mut i);
        let bad = n == 0 || (n > 1 && b[int_start] == b'0');
        let bad = bad
            || (b.get(i) == Some(&b'.') && {
                i += 1;
                digits(&mut i) == 0
            });
        let bad = bad
            || (matches!(b.get(i), Some(b'e' | b'E')) && {
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                digits(&mut i) == 0
            });
        if bad {
            self.pos = i;
            return self.err("bad number");
        }
        self.pos = i;
        Ok(())
    }
}

/// The first index from `i` holding `"`, `\\` or a control character (`b.len()` if none). Eight
/// bytes are tested at a time as one `u64`: a byte equal to `"` or `\\`, or below 0x20, sets its
/// high bit in `hit`. A borrow can also set the bit of a byte *after* such a byte, never before
/// one, so the lowest set bit is the first such byte exactly.
#[inline]
pub(crate) fn special(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(&chunk) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let x = u64::from_le_bytes(chunk);
        let q = x ^ (LO * u64::from(b'"'));
        let s = x ^ (LO * u64::from(b'\\'));
        let hit = ((q.wrapping_sub(LO) & !q)
            | (s.wrapping_sub(LO) & !s)
            | (x.wrapping_sub(LO * 0x20) & !x))
            & HI;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(s: &str) -> Result<()> {
        let mut sc = Scanner::new(s);
        sc.skip(0)?;
        sc.end()
    }

    #[test]
    fn accepts_valid_and_refuses_invalid_json() {
        for ok in [
            r#"{"a":[1,-0.5e+3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{}}"#,
            " [ ] ",
            "0",
            r#""é""#,
        ] {
            assert_eq!(skip_all(ok), Ok(()), "{ok}");
            assert!(serde_json::from_str::<serde_json::Value>(ok).is_ok());
        }
        for bad in [
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            r#""\x""#,
            "\"a\u{1}\"",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "[1 2]",
            r#""\u12g4""#,
            "\"abc",
            "{}x",
            "",
        ] {
            assert!(skip_all(bad).is_err(), "{bad:?} must be refused");
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err());
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(skip_all(&deep).unwrap_err().contains("too deep"));
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    b[len - 1..]
                        .iter_mut()
                        .for_each(|x| *x = if at == len - 1 { c } else { 0x7f });
                    assert_eq!(special(&b, 0), at, "{len} {at} {c}");
                }
            }
            assert_eq!(special(&vec![0xff; len], 0), len);
            assert_eq!(special(&vec![b' '; len], 0), len);
        }
    }

    #[test]
    fn raw_values_keep_their_text() {
        let mut sc = Scanner::new(r#"{"n":12.50,"s":"a\u0062","t":"plain","o":{"x":[1]}}"#);
        let mut got = vec![];
        sc.object(0, |sc, k| {
            got.push((k.into_owned(), sc.value(1)?));
            Ok(())
        })
        .unwrap();
        assert_eq!(got[0].1, Raw::Other("12.50"));
        assert_eq!(got[1].1.text().unwrap(), "ab");
        assert_eq!(got[2].1, Raw::Str("plain"));
        assert_eq!(got[3].1, Raw::Other(r#"{"x":[1]}"#));
    }

    proptest::proptest! {
        /// Any bytes, from any start: the first special byte, as a plain search finds it.
        #[test]
        fn special_is_the_first_special_byte(
            b in proptest::collection::vec(proptest::sample::select(vec![b'a', b'"', b'\\', 0, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa0, 0xff]), 0..64),
            from in 0usize..64,
        ) {
            let from = from.min(b.len());
            let want = b[from..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .map_or(b.len(), |p| from + p);
            proptest::prop_assert_eq!(special(&b, from), want);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, ..Default::default() })]
        /// It accepts exactly what serde_json accepts, and every document serde_json writes.
        #[test]
        fn agrees_with_serde_json(s in "[\\[\\]{}\",:0-9eE.+\\-tfrulnasx\\\\ ]{0,40}") {
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&s).is_ok();
            proptest::prop_assert_eq!(skip_all(&s).is_ok(), theirs, "{}", s);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
                let written = v.to_string();
                proptest::prop_assert!(skip_all(&written).is_ok(), "{}", written);
            }
        }
    }
}
