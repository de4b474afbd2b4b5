//! Dictionary encoding of a string column for the Parquet encoder.
//!
//! polars' writer dictionary-encodes a string column by casting it to `Dictionary<u32, Utf8View>`,
//! which hashes every value, after a HyperLogLog pass (hashing every value once more) to decide
//! whether a dictionary is worth it. Billing columns repeat: about 60 % of the values of a usage
//! page or a price sheet equal the value in the row above (`billing_account_id`, `meter_category`,
//! a meter's rows in a price sheet). [`dictionary`] takes those from the row above with one
//! compare, hashes only the rest, and counts distinct values exactly instead of estimating them.
//! Keys are numbered in first-seen order and nulls get a null key, as polars' cast does, so the
//! pages written from it are the same bytes.

use polars::prelude::PlHashMap;
use polars_arrow::array::{
    Array, DictionaryArray, MutableBinaryViewArray, PrimitiveArray, Utf8ViewArray,
};
use polars_arrow::datatypes::{ArrowDataType, IntegerType};

/// Above this share of distinct values a column is written plain (polars' writer's rule, applied
/// to the exact count instead of an estimate); columns of at most [`ALWAYS`] values always get a
/// dictionary.
const MAX_DISTINCT: (usize, usize) = (3, 4);
const ALWAYS: usize = 128;

/// `a` dictionary-encoded, or `None` when more than three quarters of its values are distinct
/// (the caller writes it plain). Stops hashing as soon as that share is passed.
pub fn dictionary(a: &Utf8ViewArray) -> Option<DictionaryArray<u32>> {
    let n = a.len();
    let limit = if n > ALWAYS {
        n * MAX_DISTINCT.0 / MAX_DISTINCT.1
    } else {
        n
    };
    let views = a.views();
    let validity = a.validity();
    let mut keys: Vec<u32> = Vec::with_capacity(n);
    let mut values = MutableBinaryViewArray::<str>::new();
    let mut seen: PlHashMap<&str, u32> = PlHashMap::default();
    // The last non-null value: its view, text and key.
    let mut prev: Option<(u128, &str, u32)> = None;
    for (i, view) in views.iter().enumerate() {
        if validity.is_some_and(|v| !v.get_bit(i)) {
            keys.push(0);
            continue;
        }
        let bits = view.as_u128();
        let text = a.value(i);
        let key = match prev {
            // Equal views are equal values (an inline view holds the bytes; an outline one points
            // at the same bytes). Otherwise the length and four-byte prefix (the view's low eight
            // bytes) must agree before the bytes are compared.
            Some((pb, pt, pk))
                if pb == bits || (pb as u64 == bits as u64 && view.length > 12 && pt == text) =>
            {
                pk
            }
            _ => {
                let next = seen.len() as u32;
                let k = *seen.entry(text).or_insert_with(|| {
                    values.push_value(text);
                    next
                });
                if seen.len() > limit {
                    return None;
                }
                k
            }
        };
        prev = Some((bits, text, key));
        keys.push(key);
    }
    let keys = PrimitiveArray::<u32>::new(ArrowDataType::UInt32, keys.into(), validity.cloned());
    let dtype = ArrowDataType::Dictionary(
        IntegerType::UInt32,
        Box::new(ArrowDataType::Utf8View),
        false,
    );
    DictionaryArray::try_new(dtype, keys, values.freeze().boxed()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// polars' own cast, the reference.
    fn reference(a: &Utf8ViewArray) -> DictionaryArray<u32> {
        let mut m =
            polars_arrow::array::MutableDictionaryArray::<u32, MutableBinaryViewArray<str>>::new(
                false,
            );
        polars_arrow::array::TryExtend::try_extend(&mut m, a.iter()).unwrap();
        m.into()
    }

    fn same(ours: &DictionaryArray<u32>, theirs: &DictionaryArray<u32>) {
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(ours.keys().validity(), theirs.keys().validity());
        for i in 0..ours.len() {
            if ours.keys().is_valid(i) {
                assert_eq!(ours.keys().value(i), theirs.keys().value(i), "key {i}");
            }
        }
        let v = |d: &DictionaryArray<u32>| {
            d.values()
                .as_any()
                .downcast_ref::<Utf8ViewArray>()
                .unwrap()
                .values_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(v(ours), v(theirs));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Runs of repeated values (short and long, some sharing a length and prefix), nulls:
        /// the same keys and dictionary as polars' cast, or `None` exactly when more than 3/4 of
        /// the values are distinct.
        #[test]
        fn matches_polars_cast(
            runs in prop::collection::vec(
                (prop::option::weighted(0.9, 0usize..40), 1usize..6), 0..120),
        ) {
            let word = |k: usize| match k % 4 {
                0 => format!("s{k}"),
                1 => format!("a-shared-long-prefix-{k}"),
                2 => format!("a-shared-long-prefix-{}", k + 1000),
                _ => format!("{k}").repeat(k % 7 + 1),
            };
            let rows: Vec<Option<String>> = runs
                .iter()
                .flat_map(|(v, n)| std::iter::repeat_n(v.map(word), *n))
                .collect();
            let a = Utf8ViewArray::from_slice(&rows);
            let theirs = reference(&a);
            let distinct = theirs.values().len();
            match dictionary(&a) {
                Some(ours) => {
                    prop_assert!(rows.len() <= ALWAYS || distinct * 4 <= rows.len() * 3);
                    same(&ours, &theirs);
                }
                None => prop_assert!(rows.len() > ALWAYS && distinct * 4 > rows.len() * 3),
            }
        }
    }

    #[test]
    fn many_distinct_values_are_left_plain() {
        let rows: Vec<Option<String>> = (0..1000).map(|i| Some(format!("resource-{i}"))).collect();
        assert!(dictionary(&Utf8ViewArray::from_slice(&rows)).is_none());
        let few: Vec<Option<String>> = (0..100).map(|i| Some(format!("resource-{i}"))).collect();
        assert!(dictionary(&Utf8ViewArray::from_slice(&few)).is_some());
    }
}
