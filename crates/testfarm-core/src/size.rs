//! Byte sizes as lab users type them: `512M`, `4G`, `4GiB`, `1.5G`, `20GB`, `2T`.
//!
//! Units are binary (1G = 1024 M) whatever the spelling, because memory and disks are
//! reported that way by the tools people compare against (`free -g`, `df -h`). A bare
//! number is refused, as for durations: is `4096` bytes or megabytes?

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {why} (examples: 512M, 4G, 1.5G, 2T)")]
pub struct SizeError {
    pub input: String,
    pub why: &'static str,
}

const MIB: u64 = 1024 * 1024;

/// Parses a size into bytes.
pub fn parse_bytes(input: &str) -> Result<u64, SizeError> {
    let err = |why| SizeError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err("expected a number"));
    }
    let shift: u32 = match unit.trim() {
        "" => return Err(err("a unit is required after the number")),
        "B" => 0,
        "K" | "k" | "KB" | "KiB" | "kB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "T" | "TB" | "TiB" => 40,
        _ => return Err(err("unknown unit (use K, M, G or T)")),
    };
    let scale = 1u64 << shift;
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(err("expected a number"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err("number too large"))?
    };
    let mut bytes = whole.checked_mul(scale).ok_or_else(|| err("too large"))?;
    if !frac.is_empty() {
        // At most 6 fractional digits matter; more is noise, not a size.
        let digits = &frac[..frac.len().min(6)];
        let f: u64 = digits.parse().map_err(|_| err("expected a number"))?;
        let denom = 10u64.pow(u32::try_from(digits.len()).unwrap_or(6));
        let add = u128::from(f) * u128::from(scale) / u128::from(denom);
        bytes = bytes
            .checked_add(u64::try_from(add).map_err(|_| err("too large"))?)
            .ok_or_else(|| err("too large"))?;
    }
    Ok(bytes)
}

/// Bytes to whole MiB, rounding up (a request is a minimum).
pub fn bytes_to_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

/// Bytes to whole GiB, rounding up.
pub fn bytes_to_gib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB * 1024)
}

/// MiB as people write them (`512M`, `4G`, `1536M`).
pub fn format_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 * MIB);
        assert_eq!(parse_bytes("4G").unwrap(), 4096 * MIB);
        assert_eq!(parse_bytes("4GiB").unwrap(), 4096 * MIB);
        assert_eq!(parse_bytes("1.5G").unwrap(), 1536 * MIB);
        assert_eq!(bytes_to_gib(parse_bytes("20GB").unwrap()), 20);
        assert_eq!(bytes_to_mib(1), 1);
        assert_eq!(
            parse_bytes("4096").unwrap_err().why,
            "a unit is required after the number"
        );
        assert!(parse_bytes("4X").is_err());
        assert!(parse_bytes("G").is_err());
        assert!(parse_bytes(".G").is_err());
        assert!(parse_bytes("1.2.3G").is_err());
        assert!(parse_bytes("99999999999T").is_err());
        assert_eq!(format_mib(4096), "4G");
        assert_eq!(format_mib(1536), "1536M");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,16}") {
            let _ = parse_bytes(&s);
        }
    }
}
