//! Price sheets → a typed `prices` frame, whatever their form: a CSV with or without BOM, or a zip
//! of CSV parts; columns matched by name case-insensitively, in any order (the documented
//! PascalCase layout and the newer alphabetical lower-camel one both occur).

use super::usage::{DecodeError, date_column, date_days, dec18, decimal_column};
use polars::prelude::*;

/// (output column, header name lower-cased, kind: 's' string, 'd' decimal, 't' date)
pub const PRICE_COLUMNS: &[(&str, &str, char)] = &[
    ("billing_account_id", "billingaccountid", 's'),
    ("billing_profile_id", "billingprofileid", 's'),
    ("meter_id", "meterid", 's'),
    ("meter_name", "metername", 's'),
    ("meter_type", "metertype", 's'),
    ("meter_category", "metercategory", 's'),
    ("meter_sub_category", "metersubcategory", 's'),
    ("meter_region", "meterregion", 's'),
    ("product", "product", 's'),
    ("product_id", "productid", 's'),
    ("sku_id", "skuid", 's'),
    ("service_family", "servicefamily", 's'),
    ("unit_of_measure", "unitofmeasure", 's'),
    ("price_type", "pricetype", 's'),
    ("term", "term", 's'),
    ("tier_minimum_units", "tierminimumunits", 'd'),
    ("effective_start_date", "effectivestartdate", 't'),
    ("effective_end_date", "effectiveenddate", 't'),
    ("unit_price", "unitprice", 'd'),
    ("base_price", "baseprice", 'd'),
    ("market_price", "marketprice", 'd'),
    ("currency", "currency", 's'),
    ("billing_currency", "billingcurrency", 's'),
];

const REQUIRED: &[&str] = &["meterid", "unitprice", "effectivestartdate", "pricetype"];

/// Price-sheet rows decoded straight into column builders (one reused byte record, no `String`
/// per field).
pub struct PriceBuilder {
    s: Vec<Option<StringChunkedBuilder>>,
    d: Vec<Vec<Option<i128>>>,
    t: Vec<Vec<Option<i32>>>,
    rows: usize,
}

impl Default for PriceBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PriceBuilder {
    pub fn new() -> Self {
        Self {
            s: PRICE_COLUMNS
                .iter()
                .map(|(name, _, kind)| {
                    (*kind == 's').then(|| StringChunkedBuilder::new((*name).into(), 0))
                })
                .collect(),
            d: vec![Vec::new(); PRICE_COLUMNS.len()],
            t: vec![Vec::new(); PRICE_COLUMNS.len()],
            rows: 0,
        }
    }

    /// A landed price sheet: zip (by its `PK` magic) or CSV.
    pub fn push_file(&mut self, what: &str, bytes: &[u8]) -> Result<usize, DecodeError> {
        if bytes.starts_with(b"PK") {
            let bad = |reason: String| DecodeError {
                what: what.to_owned(),
                reason,
            };
            let mut z = ::zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .map_err(|e| bad(format!("not a readable zip: {e}")))?;
            let mut n = 0;
            for i in 0..z.len() {
                let mut f = z
                    .by_index(i)
                    .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
                if f.is_dir() {
                    continue;
                }
                let name = f.name().to_owned();
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut buf)
                    .map_err(|e| bad(format!("zip entry {name}: {e}")))?;
                n += self.push_csv(&format!("{what}!{name}"), &buf)?;
            }
            Ok(n)
        } else {
            self.push_csv(what, bytes)
        }
    }

    pub fn push_csv(&mut self, what: &str, body: &[u8]) -> Result<usize, DecodeError> {
        self.push_csv_as(what, body, true)
    }

    /// `allow_plain`: a body without quotes may be split in place (tests compare both readings).
    fn push_csv_as(
        &mut self,
        what: &str,
        body: &[u8],
        allow_plain: bool,
    ) -> Result<usize, DecodeError> {
        let bad = |reason: String| DecodeError {
            what: what.to_owned(),
            reason,
        };
        let (mut rd, index) = super::usage::csv_with_header(what, body)?;
        let missing: Vec<&str> = REQUIRED
            .iter()
            .filter(|r| !index.contains_key(**r))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "missing column(s) {}; found {}",
                missing.join(", "),
                rd.headers()
                    .map(|h| h.iter().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            )));
        }
        let pos: Vec<Option<usize>> = PRICE_COLUMNS
            .iter()
            .map(|c| index.get(c.1).copied())
            .collect();
        let mut n = 0;
        // Without a single `"`, a record is a line and a field what lies between commas: the
        // body is checked as UTF-8 once and split in place. With quotes, the csv reader.
        let data = body
            .strip_prefix("\u{feff}".as_bytes())
            .unwrap_or(body)
            .get(usize::try_from(rd.position().byte()).unwrap_or(usize::MAX)..);
        let plain = data
            .filter(|_| allow_plain && !body.contains(&b'"'))
            .and_then(|d| simdutf8::basic::from_utf8(d).ok());
        if let Some(text) = plain {
            let width = rd.headers().map(|h| h.len()).unwrap_or(0);
            let mut fields: Vec<&str> = Vec::with_capacity(width);
            // Any of `\r`, `\n` ends a record and empty records are skipped, as the csv reader
            // does. Delimiters are found with one vectorized search over the whole body.
            let bytes = text.as_bytes();
            let mut start = 0;
            let ends = memchr::memchr3_iter(b',', b'\n', b'\r', bytes).chain([bytes.len()]);
            for end in ends {
                fields.push(&text[start..end]);
                start = end + 1;
                if bytes.get(end) == Some(&b',') {
                    continue;
                }
                if fields.len() == 1 && fields[0].is_empty() {
                    fields.clear();
                    continue;
                }
                let line = n + 2;
                if fields.len() != width {
                    return Err(bad(format!(
                        "line {line}: {} fields, but the header has {width}",
                        fields.len()
                    )));
                }
                self.push_row(what, line, &pos, |p| Ok(fields[p]))?;
                fields.clear();
                n += 1;
            }
        } else {
            let mut rec = csv::ByteRecord::new();
            loop {
                let line = n + 2;
                match rd.read_byte_record(&mut rec) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(bad(format!("line {line}: {e}"))),
                }
                self.push_row(what, line, &pos, |p| {
                    std::str::from_utf8(rec.get(p).unwrap_or_default())
                        .map_err(|u| format!("not UTF-8: {u}"))
                })?;
                n += 1;
            }
        }
        self.rows += n;
        Ok(n)
    }

    /// One record: `field(p)` is the text of field `p` (every `pos` is within the record).
    fn push_row<'r>(
        &mut self,
        what: &str,
        line: usize,
        pos: &[Option<usize>],
        field: impl Fn(usize) -> Result<&'r str, String>,
    ) -> Result<(), DecodeError> {
        for (i, (name, _, kind)) in PRICE_COLUMNS.iter().enumerate() {
            let e = |reason: String| DecodeError {
                what: what.to_owned(),
                reason: format!("line {line}, {name}: {reason}"),
            };
            let v = match pos[i] {
                None => None,
                Some(p) => Some(super::usage::trim(field(p).map_err(e)?)),
            }
            .filter(|s| !s.is_empty());
            match (kind, &mut self.s[i]) {
                ('d', _) => self.d[i].push(v.map(dec18).transpose().map_err(e)?),
                ('t', _) => self.t[i].push(v.map(date_days).transpose().map_err(e)?),
                (_, Some(b)) => b.append_option(v),
                (_, None) => {}
            }
        }
        Ok(())
    }

    pub fn finish(
        mut self,
        billing_period: &str,
        billing_profile: &str,
    ) -> PolarsResult<DataFrame> {
        let h = self.rows;
        let mut cols = vec![
            Column::new("billing_period".into(), vec![billing_period; h]),
            Column::new("billing_profile".into(), vec![billing_profile; h]),
        ];
        for (i, (name, _, kind)) in PRICE_COLUMNS.iter().enumerate() {
            cols.push(match kind {
                'd' => decimal_column(name, std::mem::take(&mut self.d[i]))?,
                't' => date_column(name, std::mem::take(&mut self.t[i])),
                _ => match self.s[i].take() {
                    Some(b) => b.finish().into_column(),
                    None => Column::full_null((*name).into(), h, &DataType::String),
                },
            });
        }
        DataFrame::new(h, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_read_the_same() {
        let a = "\u{feff}MeterId,UnitPrice,MarketPrice,EffectiveStartDate,EffectiveEndDate,PriceType,Term,TierMinimumUnits\r\nm1,0.5,0.6,2026-09-01T00:00:00Z,2099-12-31T23:59:59Z,Consumption,,0\r\n";
        let b = "effectiveEndDate,effectiveStartDate,marketPrice,meterId,priceType,Term,tierMinimumUnits,unitPrice\n2099-12-31T23:59:59Z,2026-09-01T00:00:00Z,0.60,m1,Consumption,,0,0.50\n";
        let mut x = PriceBuilder::new();
        x.push_csv("a", a.as_bytes()).unwrap();
        let mut y = PriceBuilder::new();
        y.push_csv("b", b.as_bytes()).unwrap();
        assert!(
            x.finish("2026-09", "P")
                .unwrap()
                .equals_missing(&y.finish("2026-09", "P").unwrap())
        );
        let e = PriceBuilder::new()
            .push_csv("c", b"MeterName,UnitPrice\nx,1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("meterid") && e.contains("c:"), "{e}");
    }
}

#[cfg(test)]
mod plain {
    //! A sheet without quotes is split in place; it must read exactly as the csv reader reads it.
    use super::*;
    use proptest::prelude::*;

    fn read(body: &[u8], plain: bool) -> Result<DataFrame, String> {
        let mut b = PriceBuilder::new();
        b.push_csv_as("sheet", body, plain)
            .map_err(|e| e.to_string())?;
        b.finish("2026-09", "P").map_err(|e| e.to_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(500), ..ProptestConfig::default() })]
        #[test]
        fn same_as_the_csv_reader(
            bom in any::<bool>(),
            extra in any::<bool>(),
            rows in proptest::collection::vec(
                (proptest::collection::vec(proptest::sample::select(vec!["", " ", "m1", "M1 ", "0.5", " 12.25", "-1", "2026-09-01", "2026-09-01T00:00:00Z", "Consumption", "x", "é"]), 4..=6),
                 proptest::sample::select(vec!["\n", "\r\n", "\r", "\n\n", "\r\n\r\n"])),
                0..12,
            ),
        ) {
            let mut body = String::new();
            if bom {
                body.push('\u{feff}');
            }
            body.push_str("MeterId,UnitPrice,EffectiveStartDate,PriceType");
            if extra {
                body.push_str(",Unknown");
            }
            body.push_str("\r\n");
            for (fields, end) in &rows {
                body.push_str(&fields.join(","));
                body.push_str(end);
            }
            let (a, b) = (read(body.as_bytes(), true), read(body.as_bytes(), false));
            match (&a, &b) {
                (Ok(x), Ok(y)) => prop_assert!(x.equals_missing(y), "{body:?}\n{x}\n{y}"),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{body:?}: {a:?} vs {b:?}"),
            }
        }
    }

    #[test]
    fn a_short_line_is_an_error_that_names_it() {
        let e = read(
            b"MeterId,UnitPrice,EffectiveStartDate,PriceType\nm,1,2026-09-01,Consumption\nm,1\n",
            true,
        )
        .unwrap_err();
        assert!(e.contains("line 3") && e.contains("2 fields"), "{e}");
    }
}

#[cfg(test)]
mod fuzz {
    //! The price-sheet reader takes CSV or zip; neither hostile bytes nor mutated real files panic it.
    use super::*;
    use proptest::prelude::*;

    fn zip_of(csv: &str) -> Vec<u8> {
        use std::io::Write;
        let mut z = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        z.start_file("part1.csv", ::zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(csv.as_bytes()).unwrap();
        z.finish().unwrap().into_inner()
    }

    const SHEET: &str = "MeterId,UnitPrice,EffectiveStartDate,PriceType,TierMinimumUnits\r\nm1,0.5,2026-09-01T00:00:00Z,Consumption,0\r\n";

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000), ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_and_mutated(bytes in proptest::collection::vec(any::<u8>(), 0..1024), pos in 0usize..2000, byte in any::<u8>(), zipped in any::<bool>()) {
            let _ = PriceBuilder::new().push_file("fuzz", &bytes);
            let mut real = if zipped { zip_of(SHEET) } else { SHEET.as_bytes().to_vec() };
            let p = pos % real.len();
            real[p] = byte;
            let mut b = PriceBuilder::new();
            if b.push_file("fuzz", &real).is_ok() {
                let _ = b.finish("2026-09", "P");
            }
        }
    }
}

#[cfg(test)]
mod huge {
    use super::*;

    #[test]
    fn a_huge_quoted_field_with_newlines_is_read_whole() {
        let name = format!("line1\nline2 \"quoted\" {}", "n".repeat(4 << 20));
        let csv = format!(
            "MeterId,MeterName,UnitPrice,EffectiveStartDate,PriceType\r\nm1,\"{}\",0.5,2026-09-01,Consumption\r\n",
            name.replace('"', "\"\"")
        );
        let mut b = PriceBuilder::new();
        assert_eq!(b.push_csv("huge", csv.as_bytes()).unwrap(), 1);
        let df = b.finish("2026-09", "P").unwrap();
        assert_eq!(
            df.column("meter_name").unwrap().str().unwrap().get(0),
            Some(name.as_str())
        );
    }
}
