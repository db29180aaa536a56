//! Figures as people read them, one definition for every view: `top` and
//! the text sink pack a unit to its number ("42%"), the HTML report spaces
//! them ("42 %").

use std::fmt;

pub const MIB: f64 = (1u64 << 20) as f64;
pub const GIB: f64 = (1u64 << 30) as f64;

/// A number with its unit, packed by `Display`, spaced by [`Figure::spaced`].
#[derive(Debug, PartialEq)]
pub struct Figure {
    number: String,
    unit: &'static str,
}

impl Figure {
    pub fn spaced(&self) -> String {
        format!("{} {}", self.number, self.unit)
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.number, self.unit)
    }
}

/// Percentage points (42.0 is "42%"); a share of 0 to 1 is multiplied by 100 first.
pub fn percent(points: f64) -> Figure {
    Figure {
        number: format!("{points:.0}"),
        unit: "%",
    }
}

/// Milliseconds below a second, seconds above.
pub fn seconds(s: f64) -> Figure {
    if s < 1.0 {
        Figure {
            number: format!("{:.1}", s * 1e3),
            unit: "ms",
        }
    } else {
        Figure {
            number: format!("{s:.2}"),
            unit: "s",
        }
    }
}

/// Whole MiB below a GiB, GiB to a tenth above.
pub fn bytes(b: u64) -> Figure {
    let b = b as f64;
    if b < GIB {
        Figure {
            number: format!("{:.0}", b / MIB),
            unit: "MiB",
        }
    } else {
        Figure {
            number: format!("{:.1}", b / GIB),
            unit: "GiB",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_pack_for_terminals_and_space_for_the_report() {
        assert_eq!(percent(41.6).to_string(), "42%");
        assert_eq!(percent(41.6).spaced(), "42 %");
        assert_eq!(seconds(0.01234).to_string(), "12.3ms");
        assert_eq!(seconds(2.0).spaced(), "2.00 s");
        assert_eq!(bytes(512 << 20).to_string(), "512MiB");
        assert_eq!(bytes(3 << 29).to_string(), "1.5GiB");
    }
}
