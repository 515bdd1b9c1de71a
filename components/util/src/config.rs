//! Config value types written the way operators write them: `"10s"`, `"96MiB"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `"150ms"`, `"10s"`, `"5m"`, `"1h"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadableDuration(pub Duration);

impl ReadableDuration {
    pub const fn millis(ms: u64) -> Self {
        ReadableDuration(Duration::from_millis(ms))
    }
    pub const fn secs(s: u64) -> Self {
        ReadableDuration(Duration::from_secs(s))
    }
    pub fn as_millis(&self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl FromStr for ReadableDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split =
            s.find(|c: char| !c.is_ascii_digit()).ok_or(format!("missing unit in {s:?}"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let ms = match unit {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            _ => return Err(format!("unknown duration unit {unit:?} in {s:?} (use ms, s, m, h)")),
        };
        Ok(ReadableDuration::millis(ms))
    }
}

impl fmt::Display for ReadableDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        if ms > 0 && ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms > 0 && ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A byte size written as `"512B"`, `"64KiB"`, `"96MiB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadableSize(pub u64);

impl ReadableSize {
    pub const fn kib(n: u64) -> Self {
        ReadableSize(n << 10)
    }
    pub const fn mib(n: u64) -> Self {
        ReadableSize(n << 20)
    }
    pub const fn gib(n: u64) -> Self {
        ReadableSize(n << 30)
    }
}

impl FromStr for ReadableSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let shift = match unit {
            "" | "B" => 0,
            "KiB" | "KB" => 10,
            "MiB" | "MB" => 20,
            "GiB" | "GB" => 30,
            _ => return Err(format!("unknown size unit {unit:?} in {s:?} (use B, KiB, MiB, GiB)")),
        };
        n.checked_mul(1 << shift).map(ReadableSize).ok_or(format!("size {s:?} overflows"))
    }
}

impl fmt::Display for ReadableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if n > 0 && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}B")
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}
string_serde!(ReadableDuration);
string_serde!(ReadableSize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (s, ms) in
            [("150ms", 150), ("10s", 10_000), ("5m", 300_000), ("1h", 3_600_000), ("0s", 0)]
        {
            let d: ReadableDuration = s.parse().unwrap();
            assert_eq!(d.as_millis(), ms);
            assert_eq!(d.to_string(), s);
        }
        assert!("10".parse::<ReadableDuration>().is_err());
        assert!("10d".parse::<ReadableDuration>().is_err());
        assert!("s".parse::<ReadableDuration>().is_err());
    }

    #[test]
    fn sizes_round_trip() {
        for (s, n) in [("512B", 512), ("64KiB", 64 << 10), ("96MiB", 96 << 20), ("1GiB", 1 << 30)] {
            let v: ReadableSize = s.parse().unwrap();
            assert_eq!(v.0, n);
            assert_eq!(v.to_string(), s);
        }
        assert_eq!("100".parse::<ReadableSize>().unwrap().0, 100);
        assert!("1TiB".parse::<ReadableSize>().is_err());
        assert!("99999999999999GiB".parse::<ReadableSize>().is_err());
    }

    #[test]
    fn serde_as_strings() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct C {
            d: ReadableDuration,
            s: ReadableSize,
        }
        let c: C = toml::from_str("d = \"3s\"\ns = \"8MiB\"").unwrap();
        assert_eq!(c, C { d: ReadableDuration::secs(3), s: ReadableSize::mib(8) });
        assert!(toml::from_str::<C>("d = \"3x\"\ns = \"8MiB\"").is_err());
    }
}
