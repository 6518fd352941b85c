//! Human-readable sizes, durations and limits, as written in the cluster spec.
//!
//! Sizes: a TOML integer is a number of bytes; a string is a whole number followed
//! by a unit: `B`, decimal `KB` `MB` `GB` `TB` (powers of 1000) or binary `KiB`
//! `MiB` `GiB` `TiB` (powers of 1024). `"10MB"` is 10 000 000 bytes, `"10MiB"` is
//! 10 485 760 bytes.
//!
//! Durations: a TOML integer is a number of milliseconds (every duration key ends
//! in `_ms`); a string is a whole number followed by `ms`, `s`, `m` (or `min`), `h`,
//! `d` or `w`.
//!
//! Limits: where a bound can be switched off, the string `"unlimited"` does that
//! (`"forever"` is accepted as a synonym for durations). Negative numbers are never
//! accepted: Kafka's `-1` is written `"unlimited"` here.
//!
//! Parsing is strict: no fractions, no spaces, no signs, no overflow. Every error
//! message quotes the input and says what would have been accepted.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;
pub const WEEK_MS: u64 = 7 * DAY_MS;

/// Units for sizes, longest suffix first so that "KiB" is not read as "B".
const SIZE_UNITS: [(&str, u64); 10] = [
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("TiB", TIB),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("kB", 1_000),
    ("B", 1),
];
const SIZE_UNITS_HELP: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB";

const DURATION_UNITS: [(&str, u64); 7] = [
    ("ms", 1),
    ("s", SECOND_MS),
    ("min", MINUTE_MS),
    ("m", MINUTE_MS),
    ("h", HOUR_MS),
    ("d", DAY_MS),
    ("w", WEEK_MS),
];
const DURATION_UNITS_HELP: &str = "ms, s, m, h, d or w";

const _: () = assert!(WEEK_MS == 604_800_000);
const _: () = assert!(TIB == 1_099_511_627_776);

/// Parses a size string such as `"512KiB"`, `"10MB"` or `"64B"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_with_units(text, "size", &SIZE_UNITS, SIZE_UNITS_HELP, "512KiB")
}

/// Parses a duration string such as `"250ms"`, `"30s"` or `"7d"` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    parse_with_units(
        text,
        "duration",
        &DURATION_UNITS,
        DURATION_UNITS_HELP,
        "30s",
    )
}

fn parse_with_units(
    text: &str,
    what: &str,
    units: &[(&str, u64)],
    units_help: &str,
    example: &str,
) -> Result<u64, String> {
    let digits_len = text.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, unit) = text.split_at(digits_len);
    if text.starts_with('-') {
        return Err(format!("invalid {what} {text:?}: must not be negative"));
    }
    if digits.is_empty() {
        return Err(format!(
            "invalid {what} {text:?}: expected a whole number followed by a unit, like {example:?}"
        ));
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "invalid {what} {text:?}: only whole numbers are allowed; use a smaller unit"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "invalid {what} {text:?}: missing unit ({units_help})"
        ));
    }
    let Some(&(_, multiplier)) = units.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "invalid {what} {text:?}: unknown unit {unit:?} (use {units_help})"
        ));
    };
    let too_large = || format!("invalid {what} {text:?}: too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(multiplier).ok_or_else(too_large)
}

/// Formats a byte count the way a person would write it in the spec: the largest
/// binary unit that divides it exactly ("4KiB", "1GiB"), else plain bytes ("1048588B").
pub fn format_size(bytes: u64) -> String {
    for (unit, multiplier) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if bytes >= multiplier && bytes.is_multiple_of(multiplier) {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    format!("{bytes}B")
}

/// Formats milliseconds with the largest unit that divides them exactly ("7d", "250ms").
pub fn format_duration_ms(milliseconds: u64) -> String {
    let units = [
        ("w", WEEK_MS),
        ("d", DAY_MS),
        ("h", HOUR_MS),
        ("m", MINUTE_MS),
        ("s", SECOND_MS),
    ];
    for (unit, multiplier) in units {
        if milliseconds >= multiplier && milliseconds.is_multiple_of(multiplier) {
            return format!("{}{unit}", milliseconds / multiplier);
        }
    }
    format!("{milliseconds}ms")
}

/// A bound that may be switched off with `"unlimited"` (or `"forever"` for durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Unlimited,
    At(u64),
}

impl Limit {
    /// `None` means unlimited.
    pub fn as_option(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::At(value) => Some(value),
        }
    }
}

/// What kind of quantity a value is; decides which strings are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Size,
    Duration,
    Count,
}

impl Quantity {
    fn expecting(self, limit: bool) -> &'static str {
        match (self, limit) {
            (Quantity::Size, false) => "a size: an integer (bytes) or a string like \"512KiB\"",
            (Quantity::Size, true) => {
                "a size: an integer (bytes), a string like \"512KiB\", or \"unlimited\""
            }
            (Quantity::Duration, false) => {
                "a duration: an integer (milliseconds) or a string like \"30s\""
            }
            (Quantity::Duration, true) => {
                "a duration: an integer (milliseconds), a string like \"30s\", or \"forever\""
            }
            (Quantity::Count, _) => "a count: a non-negative integer or \"unlimited\"",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Quantity::Size => "size",
            Quantity::Duration => "duration",
            Quantity::Count => "count",
        }
    }

    fn parse_str(self, text: &str, limit: bool) -> Result<Limit, String> {
        let unlimited = text == "unlimited" || (self == Quantity::Duration && text == "forever");
        if unlimited {
            if limit {
                return Ok(Limit::Unlimited);
            }
            return Err(format!(
                "{text:?} is not allowed here: this {} needs a finite value",
                self.noun()
            ));
        }
        match self {
            Quantity::Size => parse_size(text).map(Limit::At),
            Quantity::Duration => parse_duration_ms(text).map(Limit::At),
            Quantity::Count => Err(format!(
                "invalid count {text:?}: expected a non-negative integer or \"unlimited\""
            )),
        }
    }

    fn check_integer(self, value: i64, limit: bool) -> Result<Limit, String> {
        if value >= 0 {
            return Ok(Limit::At(value.unsigned_abs()));
        }
        let hint = if limit {
            match self {
                Quantity::Duration => "; write \"forever\" for no limit",
                _ => "; write \"unlimited\" for no limit",
            }
        } else {
            ""
        };
        Err(format!(
            "invalid {} {value}: must not be negative{hint}",
            self.noun()
        ))
    }
}

/// Serde visitor accepting an integer or a string, nothing else.
struct QuantityVisitor {
    quantity: Quantity,
    limit: bool,
}

impl<'de> Visitor<'de> for QuantityVisitor {
    type Value = Limit;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.quantity.expecting(self.limit))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Limit, E> {
        self.quantity
            .check_integer(value, self.limit)
            .map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Limit, E> {
        Ok(Limit::At(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Limit, E> {
        Err(E::custom(format!(
            "invalid {} {value}: only whole numbers are allowed",
            self.quantity.noun()
        )))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Limit, E> {
        self.quantity.parse_str(text, self.limit).map_err(E::custom)
    }
}

fn deserialize_quantity<'de, D: Deserializer<'de>>(
    deserializer: D,
    quantity: Quantity,
    limit: bool,
) -> Result<Limit, D::Error> {
    deserializer.deserialize_any(QuantityVisitor { quantity, limit })
}

fn finite(value: Limit) -> u64 {
    match value {
        Limit::At(value) => value,
        Limit::Unlimited => unreachable!("the visitor refuses \"unlimited\" for finite values"),
    }
}

// The helpers below are used with `#[serde(deserialize_with = ...)]` in spec.rs,
// so the spec's types hold plain numbers while the file holds human strings.

pub(crate) fn de_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserialize_quantity(deserializer, Quantity::Size, false).map(finite)
}

pub(crate) fn de_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserialize_quantity(deserializer, Quantity::Duration, false).map(finite)
}

pub(crate) fn de_count_limit<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Limit, D::Error> {
    deserialize_quantity(deserializer, Quantity::Count, true)
}

pub(crate) fn de_opt_bytes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    de_bytes(deserializer).map(Some)
}

pub(crate) fn de_opt_millis<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    de_millis(deserializer).map(Some)
}

pub(crate) fn de_opt_bytes_limit<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Limit>, D::Error> {
    deserialize_quantity(deserializer, Quantity::Size, true).map(Some)
}

pub(crate) fn de_opt_millis_limit<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Limit>, D::Error> {
    deserialize_quantity(deserializer, Quantity::Duration, true).map(Some)
}

pub(crate) fn de_opt_count_limit<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Limit>, D::Error> {
    de_count_limit(deserializer).map(Some)
}

impl<'de> Deserialize<'de> for Limit {
    /// A bare `Limit` is a count limit; sized and timed limits use the helpers above.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        de_count_limit(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(GIB));
        assert_eq!(parse_size("512KiB"), Ok(512 * KIB));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("10MiB"), Ok(10 * MIB));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("0B"), Ok(0));
        assert_eq!(parse_size("3kB"), Ok(3_000));
        assert_eq!(parse_size("2TiB"), Ok(2 * TIB));
    }

    #[test]
    fn bad_sizes() {
        let cases = [
            (
                "",
                "invalid size \"\": expected a whole number followed by a unit, like \"512KiB\"",
            ),
            (
                "GiB",
                "invalid size \"GiB\": expected a whole number followed by a unit, like \"512KiB\"",
            ),
            ("-1GiB", "invalid size \"-1GiB\": must not be negative"),
            (
                "1.5GiB",
                "invalid size \"1.5GiB\": only whole numbers are allowed; use a smaller unit",
            ),
            (
                "1024",
                "invalid size \"1024\": missing unit (B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)",
            ),
            (
                "10XB",
                "invalid size \"10XB\": unknown unit \"XB\" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)",
            ),
            (
                "1 GiB",
                "invalid size \"1 GiB\": unknown unit \" GiB\" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)",
            ),
            (
                "1gib",
                "invalid size \"1gib\": unknown unit \"gib\" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)",
            ),
            ("16777216TiB", "invalid size \"16777216TiB\": too large"),
            (
                "99999999999999999999B",
                "invalid size \"99999999999999999999B\": too large",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_size(input),
                Err(expected.to_string()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("5min"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("2w"), Ok(2 * WEEK_MS));
    }

    #[test]
    fn bad_durations() {
        let cases = [
            ("-5s", "invalid duration \"-5s\": must not be negative"),
            (
                "1.5h",
                "invalid duration \"1.5h\": only whole numbers are allowed; use a smaller unit",
            ),
            (
                "30",
                "invalid duration \"30\": missing unit (ms, s, m, h, d or w)",
            ),
            (
                "3y",
                "invalid duration \"3y\": unknown unit \"y\" (use ms, s, m, h, d or w)",
            ),
            (
                "seven days",
                "invalid duration \"seven days\": expected a whole number followed by a unit, like \"30s\"",
            ),
            (
                "30500000000000000w",
                "invalid duration \"30500000000000000w\": too large",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_duration_ms(input),
                Err(expected.to_string()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn formatting_round_trips() {
        for bytes in [0, 1, 1023, KIB, 4 * KIB, 1_048_588, 10 * MIB, GIB, 3 * TIB] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        for ms in [
            0,
            1,
            250,
            SECOND_MS,
            90 * SECOND_MS,
            HOUR_MS,
            7 * DAY_MS,
            2 * WEEK_MS,
        ] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }
        assert_eq!(format_size(1_048_588), "1048588B");
        assert_eq!(format_duration_ms(7 * DAY_MS), "1w");
    }

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "de_opt_bytes")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "de_opt_millis_limit")]
        retention: Option<Limit>,
        #[serde(default, deserialize_with = "de_opt_count_limit")]
        count: Option<Limit>,
    }

    fn probe(text: &str) -> Result<Probe, String> {
        toml::from_str::<Probe>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn deserialize_accepts_integers_strings_and_words() {
        let parsed = probe("size = 4096\nretention = \"forever\"\ncount = 10").unwrap();
        assert_eq!(parsed.size, Some(4096));
        assert_eq!(parsed.retention, Some(Limit::Unlimited));
        assert_eq!(parsed.count, Some(Limit::At(10)));
        let parsed =
            probe("size = \"4KiB\"\nretention = \"unlimited\"\ncount = \"unlimited\"").unwrap();
        assert_eq!(parsed.size, Some(4096));
        assert_eq!(parsed.retention, Some(Limit::Unlimited));
        assert_eq!(parsed.count, Some(Limit::Unlimited));
        assert_eq!(
            probe("retention = 1000").unwrap().retention,
            Some(Limit::At(1000))
        );
    }

    #[test]
    fn deserialize_rejects_bad_values() {
        let cases = [
            ("size = -1", "invalid size -1: must not be negative"),
            (
                "size = \"unlimited\"",
                "\"unlimited\" is not allowed here: this size needs a finite value",
            ),
            (
                "size = 1.5",
                "invalid size 1.5: only whole numbers are allowed",
            ),
            (
                "size = true",
                "invalid type: boolean `true`, expected a size: an integer (bytes) or a string like \"512KiB\"",
            ),
            (
                "retention = -1",
                "invalid duration -1: must not be negative; write \"forever\" for no limit",
            ),
            (
                "count = -1",
                "invalid count -1: must not be negative; write \"unlimited\" for no limit",
            ),
            (
                "count = \"10k\"",
                "invalid count \"10k\": expected a non-negative integer or \"unlimited\"",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(probe(input).unwrap_err(), expected, "input {input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_size_with_unit_parses_or_reports_overflow(number in 0u64..u64::MAX, unit in 0usize..SIZE_UNITS.len()) {
            let (name, multiplier) = SIZE_UNITS[unit];
            let text = format!("{number}{name}");
            match number.checked_mul(multiplier) {
                Some(bytes) => proptest::prop_assert_eq!(parse_size(&text), Ok(bytes)),
                None => proptest::prop_assert!(parse_size(&text).unwrap_err().ends_with("too large")),
            }
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,24}") {
            let _ = parse_size(&text);
            let _ = parse_duration_ms(&text);
        }
    }
}
