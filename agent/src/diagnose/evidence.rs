//! The figures behind a finding: one name each, its unit in the name (`_s`,
//! `_bytes`, `_percent`, `_per_second`, `_share`), as tools read them
//! (docs/diagnose.md). Names sort as text, so reports list them alike.

use std::{borrow::Cow, cmp::Ordering, fmt};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// Declares [`Evidence`] and its names from one list: each figure that takes
/// no parameter beside its name, then each that does beside how its name is
/// made.
macro_rules! evidence {
    (
        $($(#[$meta:meta])* $figure:ident => $name:literal,)*
        ;
        $($(#[$pmeta:meta])* $parameterised:ident($param:ty) as $value:ident => $made:expr,)*
    ) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Evidence {
            $($(#[$meta])* $figure,)*
            $($(#[$pmeta])* $parameterised($param),)*
        }

        /// The figures that take no parameter, for [`Evidence::parse`].
        const UNPARAMETERISED: &[Evidence] = &[$(Evidence::$figure,)*];

        impl Evidence {
            pub fn name(&self) -> Cow<'static, str> {
                match self {
                    $(Self::$figure => Cow::Borrowed($name),)*
                    $(Self::$parameterised($value) => Cow::Owned($made),)*
                }
            }
        }
    };
}

evidence! {
    // A trend: the first and the last third of the recording.
    TtftMeanFirstThirdS => "ttft_mean_first_third_s",
    TtftMeanLastThirdS => "ttft_mean_last_third_s",
    WaitingMeanFirstThird => "waiting_mean_first_third",
    WaitingMeanLastThird => "waiting_mean_last_third",
    GpuUtilizationMeanLastThirdPercent => "gpu_utilization_mean_last_third_percent",
    // Over the whole recording.
    TtftMeanS => "ttft_mean_s",
    WaitingMean => "waiting_mean",
    GpuUtilizationMeanPercent => "gpu_utilization_mean_percent",
    RequestsWithFirstToken => "requests_with_first_token",
    Requests => "requests",
    Failed => "failed",
    FailedShare => "failed_share",
    Cancelled => "cancelled",
    CancelledShare => "cancelled_share",
    CancelledAfterMeanS => "cancelled_after_mean_s",
    CancelledBeforeFirstToken => "cancelled_before_first_token",
    // A process's GPU calls.
    KernelLaunchesPerSecond => "kernel_launches_per_second",
    SmUtilizationMaxPercent => "sm_utilization_max_percent",
    SmUtilizationLimitPercent => "sm_utilization_limit_percent",
    IntervalsLaunchBound => "intervals_launch_bound",
    IntervalsWithLaunches => "intervals_with_launches",
    SyncSecondsPerSecond => "sync_seconds_per_second",
    SyncCallsPerSecond => "sync_calls_per_second",
    // A device.
    XidErrors => "xid_errors",
    MemoryUsedBytes => "memory_used_bytes",
    MemoryTotalBytes => "memory_total_bytes",
    MemoryUsedShare => "memory_used_share",
    LargestProcessPid => "largest_process_pid",
    LargestProcessMemoryUsedBytes => "largest_process_memory_used_bytes",
    Intervals => "intervals",
    IntervalsThrottled => "intervals_throttled",
    ;
    /// Errors of one XID code.
    Xid(u64) as code => format!("xid_{code}"),
    /// Intervals with one reason for slower clocks.
    IntervalsSlowedBy(Slowdown) as why => format!("intervals_{}", why.name()),
    // What was not measured, by the reasons a snapshot names.
    EventsLost(String) as why => format!("events_lost.{why}"),
    RequestsUnmeasured(String) as why => format!("requests_unmeasured.{why}"),
}

use Evidence::*;

impl Evidence {
    /// The figure a name stands for; `None` for a name no rule gives.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some((_, code)) = name.split_once("xid_").filter(|(before, _)| before.is_empty())
            && let Ok(code) = code.parse()
        {
            return Some(Xid(code));
        }
        if let Some(why) = name.strip_prefix("events_lost.") {
            return Some(EventsLost(why.to_string()));
        }
        if let Some(why) = name.strip_prefix("requests_unmeasured.") {
            return Some(RequestsUnmeasured(why.to_string()));
        }
        if let Some(why) = name.strip_prefix("intervals_").and_then(Slowdown::of) {
            return Some(IntervalsSlowedBy(why));
        }
        UNPARAMETERISED.iter().find(|e| e.name() == name).cloned()
    }
}

impl Ord for Evidence {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name().cmp(&other.name())
    }
}

impl PartialOrd for Evidence {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Evidence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Cow::<str>::deserialize(d)?;
        Evidence::parse(&name).ok_or_else(|| D::Error::custom(format!("unknown evidence `{name}`")))
    }
}

/// A reason NVML gives for slower clocks that costs speed, as it names it.
/// In the order of their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slowdown {
    HwPowerBrake,
    Hw,
    HwThermal,
    SwPowerCap,
    SwThermal,
}

impl Slowdown {
    const ALL: [Self; 5] = [
        Self::HwPowerBrake,
        Self::Hw,
        Self::HwThermal,
        Self::SwPowerCap,
        Self::SwThermal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::HwPowerBrake => "hw_power_brake_slowdown",
            Self::Hw => "hw_slowdown",
            Self::HwThermal => "hw_thermal_slowdown",
            Self::SwPowerCap => "sw_power_cap",
            Self::SwThermal => "sw_thermal_slowdown",
        }
    }

    /// The slowdown a clock event reason names; `None` for those that cost no speed (idle, say).
    pub fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Heat, not a power limit: cooling is what would help.
    pub fn thermal(self) -> bool {
        matches!(self, Self::HwThermal | Self::SwThermal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_reads_back_from_its_name_and_names_sort_as_text() {
        let mut all = UNPARAMETERISED.to_vec();
        all.extend([
            Xid(79),
            IntervalsSlowedBy(Slowdown::HwThermal),
            EventsLost("net_event_ring_full".into()),
            RequestsUnmeasured("events_lost".into()),
        ]);
        for e in &all {
            assert_eq!(Evidence::parse(&e.name()).as_ref(), Some(e), "{e}");
        }
        assert_eq!(Evidence::parse("xid_"), None);
        assert_eq!(Evidence::parse("intervals_gpu_idle"), None);
        assert_eq!(Evidence::parse("no_such_figure"), None);
        let mut names: Vec<String> = all.iter().map(|e| e.name().into_owned()).collect();
        all.sort();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "two figures share a name");
        assert_eq!(
            all.iter().map(|e| e.name().into_owned()).collect::<Vec<_>>(),
            names
        );
    }

    #[test]
    fn slowdowns_are_nvmls_names_and_only_heat_is_thermal() {
        assert_eq!(Slowdown::of("hw_thermal_slowdown"), Some(Slowdown::HwThermal));
        assert_eq!(Slowdown::of("gpu_idle"), None);
        assert!(Slowdown::SwThermal.thermal() && !Slowdown::SwPowerCap.thermal());
        let mut sorted = Slowdown::ALL;
        sorted.sort_by_key(|s| s.name());
        assert_eq!(sorted, Slowdown::ALL);
    }
}
