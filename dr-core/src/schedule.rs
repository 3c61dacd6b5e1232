//! Schedules for `dr-agent`: cron expressions in a time zone, an injectable
//! [`Clock`], and [`Scheduler`], a pure state machine that says which job
//! starts when.
//!
//! The rules, from the runbook's agent issue:
//! - **No overlap.** A job whose previous run is still going when it falls
//!   due is not started: the run is skipped and counted
//!   ([`Decision::Skip`]).
//! - **One catch-up.** Runs missed while the agent was down (or asleep) are
//!   collapsed into a single run started at once, never a burst
//!   ([`Decision::Start`] with `missed` > 0).
//!
//! Cron expressions follow the usual five fields (`minute hour
//! day-of-month month day-of-week`, see crontab(5)); a sixth, leading
//! seconds field is accepted. Parsing and "next occurrence", including
//! daylight-saving gaps and repeats, come from the `croner` crate; time zone
//! names are IANA names through `chrono-tz` (`UTC` by default).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use dr_core::schedule::{CronSchedule, Decision, LastRun, Scheduler, Tz};
//!
//! let six_hourly = CronSchedule::parse("0 */6 * * *", Tz::UTC).unwrap();
//! let start = Utc.with_ymd_and_hms(2024, 5, 1, 7, 0, 0).unwrap();
//! let mut s = Scheduler::new();
//! // The last backup finished at 05:10: the 06:00 run was missed.
//! s.add("backup:app-db", six_hourly, LastRun::At(start - chrono::Duration::minutes(110)), start)
//!     .unwrap();
//! let d = s.poll(start);
//! assert!(matches!(&d[..], [Decision::Start { missed: 0, .. }]));
//! assert_eq!(s.next_due(), Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
pub use chrono_tz::Tz;

use crate::error::{Error, Result};

/// Upper bound on the missed occurrences counted after a long downtime
/// (a per-second schedule after a month away would otherwise loop for long).
const MAX_COUNTED: u64 = 100_000;

/// A cron expression evaluated in a time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    cron: croner::Cron,
    tz: Tz,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("tz", &self.tz)
            .finish()
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.tz)
    }
}

impl CronSchedule {
    /// Parses a cron expression (five fields, or six with leading seconds)
    /// to be evaluated in `tz`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the expression and what is wrong.
    pub fn parse(expression: &str, tz: Tz) -> Result<Self> {
        let expression = expression.trim();
        let cron = croner::Cron::new(expression)
            .with_seconds_optional()
            .parse()
            .map_err(|e| Error::InvalidConfig {
                key: format!("schedule {expression:?}"),
                reason: e.to_string(),
            })?;
        let s = CronSchedule {
            expression: expression.to_string(),
            cron,
            tz,
        };
        // An expression that never fires (`0 0 31 2 *`) is a mistake.
        if s.next_after(Utc::now()).is_none() {
            return Err(Error::InvalidConfig {
                key: format!("schedule {expression:?}"),
                reason: "the expression never fires".into(),
            });
        }
        Ok(s)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is evaluated in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first occurrence strictly after `t`, or `None` if there is none.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
///
/// # Errors
/// [`Error::InvalidConfig`] naming the unknown zone.
pub fn parse_time_zone(name: &str) -> Result<Tz> {
    name.trim().parse::<Tz>().map_err(|_| Error::InvalidConfig {
        key: "time_zone".into(),
        reason: format!(
            "{name:?} is not an IANA time zone name (such as \"UTC\" or \"Europe/Berlin\")"
        ),
    })
}

/// Where the scheduler gets the time from: the system clock in the agent,
/// a [`ManualClock`] in tests.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }

    /// Sets the time.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is known of a job's previous run when it is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRun {
    /// Nothing is known (prune, verify: the agent keeps no state): the job
    /// first runs at its next occurrence.
    Unknown,
    /// It never ran (a source with no backup in the repository): one
    /// catch-up run at once.
    Never,
    /// It last ran at this time: if an occurrence fell between then and now,
    /// one catch-up run at once.
    At(DateTime<Utc>),
}

/// What [`Scheduler::poll`] decided for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the job now. The caller must call [`Scheduler::finished`] when
    /// the run ends.
    Start {
        /// The job.
        job: String,
        /// The occurrence this run is for (the latest one due).
        due: DateTime<Utc>,
        /// Earlier occurrences collapsed into this run (0 on time; more
        /// after downtime, or for a job that never ran).
        missed: u64,
    },
    /// The job is due but its previous run is still going: not started.
    Skip {
        /// The job.
        job: String,
        /// The latest occurrence skipped.
        due: DateTime<Utc>,
        /// Occurrences skipped by this decision (1 unless several fell due
        /// since the last poll).
        count: u64,
    },
}

#[derive(Debug)]
struct JobState {
    schedule: CronSchedule,
    next: Option<DateTime<Utc>>,
    /// Whether `next` is a catch-up for a job that never ran (its missed
    /// count is then not meaningful).
    never_ran: bool,
    running: bool,
    skipped: u64,
}

/// The pure scheduler: jobs with schedules, which are running, which are
/// due. It does no I/O and reads no clock: the caller passes `now`.
#[derive(Debug, Default)]
pub struct Scheduler {
    jobs: BTreeMap<String, JobState>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a job. See [`LastRun`] for when it first falls due.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a job of that name exists.
    pub fn add(
        &mut self,
        job: impl Into<String>,
        schedule: CronSchedule,
        last: LastRun,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let job = job.into();
        if self.jobs.contains_key(&job) {
            return Err(Error::InvalidConfig {
                key: job,
                reason: "scheduled twice".into(),
            });
        }
        let (next, never_ran) = match last {
            LastRun::Unknown => (schedule.next_after(now), false),
            LastRun::Never => (Some(now), true),
            LastRun::At(t) => (schedule.next_after(t.min(now)), false),
        };
        self.jobs.insert(
            job,
            JobState {
                schedule,
                next,
                never_ran,
                running: false,
                skipped: 0,
            },
        );
        Ok(())
    }

    /// The decisions for every job due at `now`, in job-name order. A due
    /// job that is running is skipped; otherwise it starts once, however
    /// many occurrences passed. Either way its next occurrence is the first
    /// after `now`.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let mut out = Vec::new();
        for (name, st) in &mut self.jobs {
            let Some(first) = st.next.filter(|n| *n <= now) else {
                continue;
            };
            // Count the occurrences in [first, now]; `due` is the latest.
            let mut due = first;
            let mut count: u64 = 1;
            while count < MAX_COUNTED {
                match st.schedule.next_after(due) {
                    Some(n) if n <= now => {
                        due = n;
                        count += 1;
                    }
                    _ => break,
                }
            }
            st.next = st.schedule.next_after(now);
            let never_ran = std::mem::replace(&mut st.never_ran, false);
            if st.running {
                st.skipped += count;
                out.push(Decision::Skip {
                    job: name.clone(),
                    due,
                    count,
                });
            } else {
                st.running = true;
                out.push(Decision::Start {
                    job: name.clone(),
                    due,
                    missed: if never_ran { 0 } else { count - 1 },
                });
            }
        }
        out
    }

    /// Makes `job` due at `now`, ahead of its schedule, unless it is
    /// running: the next [`Scheduler::poll`] starts it (with nothing
    /// missed), and its schedule goes on after that. Returns whether it was
    /// brought forward (false for a running or unknown job).
    pub fn run_early(&mut self, job: &str, now: DateTime<Utc>) -> bool {
        match self.jobs.get_mut(job) {
            Some(st) if !st.running => {
                st.next = Some(now);
                st.never_ran = true;
                true
            }
            _ => false,
        }
    }

    /// Marks the run of `job` as ended (successfully or not).
    pub fn finished(&mut self, job: &str) {
        if let Some(st) = self.jobs.get_mut(job) {
            st.running = false;
        }
    }

    /// Whether `job` is running.
    pub fn is_running(&self, job: &str) -> bool {
        self.jobs.get(job).is_some_and(|s| s.running)
    }

    /// Occurrences of `job` skipped so far because it was running.
    pub fn skipped(&self, job: &str) -> u64 {
        self.jobs.get(job).map_or(0, |s| s.skipped)
    }

    /// The earliest next occurrence over all jobs.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.jobs.values().filter_map(|s| s.next).min()
    }

    /// The next occurrence of `job`.
    pub fn next_of(&self, job: &str) -> Option<DateTime<Utc>> {
        self.jobs.get(job).and_then(|s| s.next)
    }

    /// The job names.
    pub fn jobs(&self) -> impl Iterator<Item = &str> {
        self.jobs.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, h, m, 0).unwrap()
    }

    fn every_6h() -> CronSchedule {
        CronSchedule::parse("0 */6 * * *", chrono_tz::UTC).unwrap()
    }

    #[test]
    fn runbook_schedules_fire_when_expected() {
        let s = every_6h();
        assert_eq!(s.next_after(t(0, 0)), Some(t(6, 0)));
        assert_eq!(s.next_after(t(5, 59)), Some(t(6, 0)));
        let daily = CronSchedule::parse("0 2 * * *", chrono_tz::UTC).unwrap();
        assert_eq!(daily.next_after(t(2, 0)), Some(t(2, 0) + Duration::days(1)));
        let vault = CronSchedule::parse("0 */4 * * *", chrono_tz::UTC).unwrap();
        assert_eq!(vault.next_after(t(9, 30)), Some(t(12, 0)));
        // A leading seconds field.
        let secs = CronSchedule::parse("*/10 * * * * *", chrono_tz::UTC).unwrap();
        assert_eq!(
            secs.next_after(t(0, 0)),
            Some(t(0, 0) + Duration::seconds(10))
        );
    }

    #[test]
    fn time_zone_and_daylight_saving() {
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        let daily = CronSchedule::parse("0 2 * * *", berlin).unwrap();
        // 02:00 in Berlin in May (CEST, UTC+2) is 00:00 UTC.
        assert_eq!(
            daily.next_after(t(0, 30)),
            Some(t(0, 0) + Duration::days(1))
        );
        // 31 March 2024: 02:00 does not exist in Berlin (clocks jump to 03:00).
        // The run is not lost: it happens once, at the first valid time.
        let before = Utc.with_ymd_and_hms(2024, 3, 30, 23, 0, 0).unwrap();
        let next = daily.next_after(before).unwrap();
        assert!(
            next <= Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap(),
            "{next}"
        );
        assert!(next > before);
    }

    #[test]
    fn bad_input_is_named() {
        let e = CronSchedule::parse("0 */6 * *", chrono_tz::UTC).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidConfig { key, .. } if key.contains("0 */6 * *")),
            "{e}"
        );
        assert!(CronSchedule::parse("61 * * * *", chrono_tz::UTC).is_err());
        assert!(CronSchedule::parse("0 0 31 2 *", chrono_tz::UTC).is_err());
        let e = parse_time_zone("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        assert_eq!(parse_time_zone("UTC").unwrap(), chrono_tz::UTC);
    }

    #[test]
    fn on_time_runs_start_and_advance() {
        let mut s = Scheduler::new();
        s.add("b", every_6h(), LastRun::Unknown, t(1, 0)).unwrap();
        assert!(s.poll(t(5, 59)).is_empty());
        assert_eq!(
            s.poll(t(6, 0)),
            vec![Decision::Start {
                job: "b".into(),
                due: t(6, 0),
                missed: 0
            }]
        );
        assert_eq!(s.next_due(), Some(t(12, 0)));
        // Polling again at the same instant does not start it twice.
        assert!(s.poll(t(6, 0)).is_empty());
        s.finished("b");
        assert!(!s.is_running("b"));
    }

    #[test]
    fn overlap_is_skipped_and_counted() {
        let mut s = Scheduler::new();
        s.add("b", every_6h(), LastRun::Unknown, t(1, 0)).unwrap();
        assert!(matches!(&s.poll(t(6, 0))[..], [Decision::Start { .. }]));
        // Still running at noon: skipped, not queued.
        assert_eq!(
            s.poll(t(12, 0)),
            vec![Decision::Skip {
                job: "b".into(),
                due: t(12, 0),
                count: 1
            }]
        );
        assert_eq!(s.skipped("b"), 1);
        s.finished("b");
        // Finishing does not start the skipped run.
        assert!(s.poll(t(13, 0)).is_empty());
        assert!(matches!(
            &s.poll(t(18, 0))[..],
            [Decision::Start { missed: 0, .. }]
        ));
        assert_eq!(s.skipped("b"), 1);
    }

    #[test]
    fn downtime_gives_one_catch_up_not_a_burst() {
        let mut s = Scheduler::new();
        // Last run at 00:00; the agent comes back at 19:00: 06, 12 and 18 were missed.
        s.add("b", every_6h(), LastRun::At(t(0, 0)), t(19, 0))
            .unwrap();
        let d = s.poll(t(19, 0));
        assert_eq!(
            d,
            vec![Decision::Start {
                job: "b".into(),
                due: t(18, 0),
                missed: 2
            }]
        );
        s.finished("b");
        assert!(s.poll(t(19, 1)).is_empty());
        assert_eq!(s.next_due(), Some(t(0, 0) + Duration::days(1)));
    }

    #[test]
    fn never_ran_starts_once_at_once_unknown_waits() {
        let mut s = Scheduler::new();
        s.add("new", every_6h(), LastRun::Never, t(7, 0)).unwrap();
        s.add("prune", every_6h(), LastRun::Unknown, t(7, 0))
            .unwrap();
        assert_eq!(
            s.poll(t(7, 0)),
            vec![Decision::Start {
                job: "new".into(),
                due: t(7, 0),
                missed: 0
            }]
        );
        assert_eq!(s.next_of("new"), Some(t(12, 0)));
        assert_eq!(s.next_of("prune"), Some(t(12, 0)));
        assert!(s.add("new", every_6h(), LastRun::Unknown, t(7, 0)).is_err());
    }

    #[test]
    fn a_controlled_clock_drives_a_day() {
        let clock = ManualClock::new(t(0, 30));
        let mut s = Scheduler::new();
        s.add("b", every_6h(), LastRun::At(t(0, 0)), clock.now())
            .unwrap();
        let mut started = Vec::new();
        for _ in 0..(24 * 4) {
            clock.advance(Duration::minutes(15));
            for d in s.poll(clock.now()) {
                if let Decision::Start { job, due, .. } = d {
                    started.push(due);
                    s.finished(&job);
                }
            }
        }
        assert_eq!(
            started,
            vec![t(6, 0), t(12, 0), t(18, 0), t(0, 0) + Duration::days(1)]
        );
    }

    #[test]
    fn a_job_run_early_starts_at_the_next_poll_then_keeps_its_schedule() {
        let mut s = Scheduler::new();
        let hourly = CronSchedule::parse("0 * * * *", chrono_tz::UTC).unwrap();
        s.add("b", hourly, LastRun::Unknown, t(10, 5)).unwrap();
        assert!(s.poll(t(10, 20)).is_empty());
        assert!(s.run_early("b", t(10, 20)));
        assert_eq!(
            s.poll(t(10, 20)),
            vec![Decision::Start {
                job: "b".into(),
                due: t(10, 20),
                missed: 0
            }]
        );
        assert_eq!(s.next_of("b"), Some(t(11, 0)));
        // Running: not brought forward again; unknown jobs neither.
        assert!(!s.run_early("b", t(10, 30)));
        assert!(s.poll(t(10, 30)).is_empty());
        assert!(!s.run_early("nope", t(10, 30)));
        s.finished("b");
        assert_eq!(s.next_of("b"), Some(t(11, 0)));
    }
}
