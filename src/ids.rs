//! Turning IDs from the API into path segments, safely.
//!
//! Every value that becomes part of a path (a hive partition value, a landing folder) goes through
//! [`segment`]: it percent-encodes everything outside `[A-Za-z0-9._-]` (so `/`, `\`, `:`, `%`, `..`,
//! NUL and unicode can never change the path's shape), and refuses empty values. Readers (pyarrow,
//! polars, DuckDB, Spark) decode hive values with the same percent-encoding. Nothing is ever written
//! outside the root it is given.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("empty value for `{what}` cannot be a path segment")]
    Empty { what: String },
    #[error("value for `{what}` is {len} bytes; at most 512 are allowed in a path segment")]
    TooLong { what: String, len: usize },
}

/// Percent-encodes `value` into one path segment.
pub fn segment(what: &str, value: &str) -> Result<String, IdError> {
    if value.is_empty() {
        return Err(IdError::Empty {
            what: what.to_owned(),
        });
    }
    if value.len() > 512 {
        return Err(IdError::TooLong {
            what: what.to_owned(),
            len: value.len(),
        });
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || b == b'-'
            || b == b'_'
            || (b == b'.' && value != "." && value != "..")
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// `key=value` with the value encoded.
pub fn hive(key: &str, value: &str) -> Result<String, IdError> {
    Ok(format!("{key}={}", segment(key, value)?))
}

/// Inverse of [`segment`].
pub fn decode(seg: &str) -> String {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&seg[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_stay_one_segment() {
        for v in [
            "../etc",
            "a/b",
            "x:y_2019-05-31",
            "100%",
            "nul\0",
            "naïve €",
            "..",
            ".",
            "a\\b",
            " ",
        ] {
            let s = segment("id", v).unwrap();
            assert!(
                !s.contains('/') && !s.contains('\\') && !s.contains('\0') && s != ".." && s != ".",
                "{v:?} → {s}"
            );
            assert!(s.is_ascii());
            assert_eq!(decode(&s), v);
        }
        assert_eq!(segment("id", "G012345678").unwrap(), "G012345678");
        assert_eq!(
            hive("billing_period", "2026-10").unwrap(),
            "billing_period=2026-10"
        );
        assert!(segment("id", "").is_err());
    }
}
