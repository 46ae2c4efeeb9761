//! RFC 3339 text for UTC instants, exactly as chrono's
//! `to_rfc3339_opts(SecondsFormat::AutoSi, use_z)` writes it (sub-second digits in
//! groups of three, none for a whole second), without chrono's general formatting
//! machinery.
//!
//! Why: every lease round trip writes about ten of these (the stored row, the events,
//! the answer), and chrono's path through its format items was ~1.1 k instructions
//! each, 4% of the server's work per round trip (docs/benchmarks.md). This one is a
//! few dozen. The stored text must not change (columns are compared and ordered as
//! text), so the tests compare it with chrono's over the whole range it handles; what
//! it does not handle (years outside 0–9999, leap seconds) goes to chrono.

use chrono::{DateTime, SecondsFormat, Utc};

/// The instant as `2026-11-23T21:04:05.123Z` (`use_z`) or `…05.123+00:00`.
pub fn rfc3339(t: &DateTime<Utc>, use_z: bool) -> String {
    let secs = t.timestamp();
    let nanos = t.timestamp_subsec_nanos();
    let days = secs.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::AutoSi, use_z);
    }
    let of_day = secs.rem_euclid(86_400);
    // Written as bytes into a fixed buffer: pushing chars onto a `String` one at a time
    // cost as much as chrono did (a capacity check and UTF-8 encoding per character).
    let mut out = Ascii::default();
    out.digits(year as u32, 4);
    out.bytes(b"-");
    out.digits(month, 2);
    out.bytes(b"-");
    out.digits(day, 2);
    out.bytes(b"T");
    out.digits((of_day / 3600) as u32, 2);
    out.bytes(b":");
    out.digits((of_day / 60 % 60) as u32, 2);
    out.bytes(b":");
    out.digits((of_day % 60) as u32, 2);
    if nanos != 0 {
        out.bytes(b".");
        if nanos.is_multiple_of(1_000_000) {
            out.digits(nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            out.digits(nanos / 1_000, 6);
        } else {
            out.digits(nanos, 9);
        }
    }
    out.bytes(if use_z { b"Z" } else { b"+00:00" });
    match std::str::from_utf8(out.text()) {
        Ok(text) => text.to_owned(),
        // Only ASCII digits and separators were written.
        Err(_) => t.to_rfc3339_opts(SecondsFormat::AutoSi, use_z),
    }
}

/// The longest text: `9999-12-31T23:59:59.999999999+00:00`.
struct Ascii {
    buf: [u8; 35],
    len: usize,
}

impl Default for Ascii {
    fn default() -> Self {
        Ascii {
            buf: [0; 35],
            len: 0,
        }
    }
}

impl Ascii {
    /// `n` as exactly `width` decimal digits (zero-padded; `n` has no more).
    fn digits(&mut self, n: u32, width: u32) {
        let mut div = 10u32.pow(width - 1);
        while div > 0 {
            self.bytes(&[b'0' + (n / div % 10) as u8]);
            div /= 10;
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn chrono_text(t: &DateTime<Utc>, z: bool) -> String {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, z)
    }

    #[test]
    fn known_instants_and_every_precision() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 21, 4, 5).unwrap();
        assert_eq!(rfc3339(&t, true), "2026-11-23T21:04:05Z");
        assert_eq!(rfc3339(&t, false), "2026-11-23T21:04:05+00:00");
        for (nanos, text) in [
            (123_000_000, "2026-11-23T21:04:05.123Z"),
            (123_456_000, "2026-11-23T21:04:05.123456Z"),
            (123_456_789, "2026-11-23T21:04:05.123456789Z"),
            (1, "2026-11-23T21:04:05.000000001Z"),
        ] {
            let at = t + chrono::Duration::nanoseconds(nanos);
            assert_eq!(rfc3339(&at, true), text);
            assert_eq!(rfc3339(&at, true), chrono_text(&at, true));
        }
        for t in [
            DateTime::<Utc>::UNIX_EPOCH,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2000, 2, 29, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1900, 3, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 0, 0, 0).unwrap(),
        ] {
            assert_eq!(rfc3339(&t, false), chrono_text(&t, false));
        }
    }

    proptest! {
        #[test]
        fn same_text_as_chrono(
            secs in -62_167_219_200i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
            round in 0u32..3,
            z: bool,
        ) {
            let nanos = match round {
                0 => nanos / 1_000_000 * 1_000_000,
                1 => nanos / 1_000 * 1_000,
                _ => nanos,
            };
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(rfc3339(&t, z), chrono_text(&t, z));
        }
    }
}
