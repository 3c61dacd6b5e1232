//! The plan executor with in-memory actions: ordering, concurrency, timeouts,
//! retries with backoff, `on_failure`, rollback order, crash and resume,
//! journals in a repository, approvals, reports and drills.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dr_core::drill;
use dr_core::plan::{
    actions, check, ActionContext, ActionOutput, ActionRegistry, CheckOptions, DrillCheck,
    Executor, FileApprover, JournalStore, OnFailure, PlanSpec, RetryOn, RunOptions, RunStatus,
    StepSpec, StepStatus,
};
use dr_core::{Error, ErrorKind};
use serde::Deserialize;
use serde_json::json;

/// What the test actions did, in order: `start:a`, `end:a`, `undo:a`.
#[derive(Debug, Default)]
struct Log {
    events: Mutex<Vec<(String, Instant)>>,
    attempts: Mutex<BTreeMap<String, u32>>,
    /// While set, `block` steps wait forever (a hung process).
    block: AtomicBool,
    /// While set, `fail_flag` steps fail.
    fail: AtomicBool,
    /// Checkpoints seen by steps at start.
    seen_checkpoints: Mutex<Vec<(String, Option<serde_json::Value>)>>,
}

impl Log {
    fn push(&self, e: String) {
        self.events.lock().unwrap().push((e, Instant::now()));
    }
    fn events(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }
    fn at(&self, e: &str) -> Instant {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(x, _)| x == e)
            .unwrap_or_else(|| panic!("no event {e}"))
            .1
    }
    fn pos(&self, e: &str) -> usize {
        self.events()
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("no event {e} in {:?}", self.events()))
    }
    fn attempts(&self, step: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(step)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestParams {
    #[serde(default)]
    sleep_ms: u64,
    /// Fail this many first attempts with a retryable error.
    #[serde(default)]
    fail_times: u32,
    /// Fail every attempt with a non-retryable error.
    #[serde(default)]
    fail: bool,
    /// Fail while `Log::fail` is set.
    #[serde(default)]
    fail_flag: bool,
    /// Block forever while `Log::block` is set (after checkpointing).
    #[serde(default)]
    block: bool,
    #[serde(default)]
    rollback: bool,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug)]
struct TestAction {
    p: TestParams,
    log: Arc<Log>,
}

#[async_trait]
impl dr_core::plan::Action for TestAction {
    fn name(&self) -> &'static str {
        "test.step"
    }
    fn describe(&self) -> String {
        format!("test step (value {:?})", self.p.value)
    }
    async fn run(&self, ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let attempt = {
            let mut a = self.log.attempts.lock().unwrap();
            let n = a.entry(ctx.step.clone()).or_default();
            *n += 1;
            *n
        };
        self.log.push(format!("start:{}", ctx.step));
        if let Some(cp) = &ctx.checkpoint {
            self.log
                .seen_checkpoints
                .lock()
                .unwrap()
                .push((ctx.step.clone(), cp.previous().cloned()));
        }
        if self.p.block && self.log.block.load(Ordering::SeqCst) {
            ctx.checkpoint
                .as_ref()
                .expect("the executor gives a checkpoint")
                .save(json!({"saw": "original"}))
                .await?;
            futures::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(self.p.sleep_ms)).await;
        if attempt <= self.p.fail_times {
            self.log.push(format!("fail:{}", ctx.step));
            return Err(Error::Unavailable {
                what: "test server".into(),
                source: "connection refused".into(),
            });
        }
        if self.p.fail || (self.p.fail_flag && self.log.fail.load(Ordering::SeqCst)) {
            self.log.push(format!("fail:{}", ctx.step));
            return Err(Error::failed(format!("step {}", ctx.step), "it broke"));
        }
        self.log.push(format!("end:{}", ctx.step));
        Ok(ActionOutput {
            summary: format!("did {}", ctx.step),
            state: json!({ "value": self.p.value, "step": ctx.step }),
            log: String::new(),
        })
    }
    fn has_rollback(&self) -> bool {
        self.p.rollback
    }
    async fn rollback(
        &self,
        ctx: &ActionContext,
        output: &ActionOutput,
    ) -> dr_core::Result<ActionOutput> {
        assert_eq!(
            output.state["step"],
            json!(ctx.step),
            "rollback gets the step's own output"
        );
        self.log.push(format!("undo:{}", ctx.step));
        Ok(ActionOutput::summary(format!("undid {}", ctx.step)))
    }
}

fn registry(log: &Arc<Log>) -> ActionRegistry {
    let mut r = ActionRegistry::new();
    actions::register(&mut r);
    let l = log.clone();
    r.register_typed("test.step", move |p: TestParams| {
        Ok(Arc::new(TestAction { p, log: l.clone() }) as Arc<dyn dr_core::plan::Action>)
    });
    r
}

fn step(name: &str) -> StepSpec {
    StepSpec::new(name, "test.step")
}

struct Harness {
    log: Arc<Log>,
    registry: ActionRegistry,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let log = Arc::new(Log::default());
        Harness {
            registry: registry(&log),
            log,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn executor(&self) -> Executor {
        Executor::new(JournalStore::local(self.dir.path()))
    }
    fn check(&self, spec: &PlanSpec) -> dr_core::plan::CheckedPlan {
        check(spec, &self.registry, &CheckOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[tokio::test]
async fn steps_run_in_dependency_order_and_independent_ones_at_once() {
    let h = Harness::new();
    // d after b and c; b and c after a. Written out of order on purpose.
    let spec = PlanSpec::new("order")
        .step(step("d").after(["b", "c"]))
        .step(step("b").param("sleep_ms", 300).after(["a"]))
        .step(step("c").param("sleep_ms", 300).after(["a"]))
        .step(step("a"));
    let plan = h.check(&spec);
    let order: Vec<_> = plan.ordered().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d"]);

    let started = Instant::now();
    let report = h.executor().run(&plan).await.unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{}",
        report.to_markdown()
    );
    let l = &h.log;
    assert!(l.pos("end:a") < l.pos("start:b") && l.pos("end:a") < l.pos("start:c"));
    assert!(l.pos("end:b") < l.pos("start:d") && l.pos("end:c") < l.pos("start:d"));
    // b and c overlapped: each started before the other ended.
    assert!(l.at("start:c") < l.at("end:b") && l.at("start:b") < l.at("end:c"));
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "b and c ran one after the other"
    );
}

#[tokio::test]
async fn max_parallel_one_runs_steps_one_at_a_time() {
    let h = Harness::new();
    let mut spec = PlanSpec::new("serial")
        .step(step("a").param("sleep_ms", 100))
        .step(step("b").param("sleep_ms", 100));
    spec.max_parallel = Some(1);
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert!(
        h.log.pos("end:a") < h.log.pos("start:b"),
        "{:?}",
        h.log.events()
    );
}

#[tokio::test]
async fn a_step_over_its_timeout_fails_the_run() {
    let h = Harness::new();
    let spec = PlanSpec::new("slow")
        .step(step("slow").param("sleep_ms", 10_000).timeout("100ms"))
        .step(step("next").after(["slow"]));
    let started = Instant::now();
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.failed_step.as_deref(), Some("slow"));
    let slow = &report.steps[0];
    assert_eq!(slow.status, StepStatus::Failed);
    assert!(
        slow.error
            .as_deref()
            .unwrap()
            .contains("did not finish within"),
        "{:?}",
        slow.error
    );
    assert_eq!(report.steps[1].status, StepStatus::Skipped);
    assert!(!h.log.events().contains(&"start:next".to_string()));
}

#[tokio::test]
async fn retryable_errors_are_retried_with_exponential_backoff() {
    let h = Harness::new();
    let spec =
        PlanSpec::new("flaky").step(step("flaky").param("fail_times", 2).retries(3, "100ms"));
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(h.log.attempts("flaky"), 3);
    assert_eq!(report.steps[0].attempts, 3);
    let events = h.log.events.lock().unwrap().clone();
    let starts: Vec<Instant> = events
        .iter()
        .filter(|(e, _)| e == "start:flaky")
        .map(|(_, t)| *t)
        .collect();
    // 100 ms before the 2nd attempt, 200 ms before the 3rd.
    assert!(starts[1] - starts[0] >= Duration::from_millis(100));
    assert!(starts[2] - starts[1] >= Duration::from_millis(200));

    // Out of retries: fails after 1 + retries attempts.
    let h = Harness::new();
    let spec = PlanSpec::new("flaky").step(step("flaky").param("fail_times", 5).retries(2, "10ms"));
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(h.log.attempts("flaky"), 3);
}

#[tokio::test]
async fn non_retryable_errors_are_not_retried_unless_asked() {
    let h = Harness::new();
    let spec = PlanSpec::new("broken").step(step("broken").param("fail", true).retries(3, "10ms"));
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(h.log.attempts("broken"), 1);

    let h = Harness::new();
    let spec = PlanSpec::new("broken").step(
        step("broken")
            .param("fail", true)
            .retries(2, "10ms")
            .retry_on(RetryOn::Any),
    );
    h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(h.log.attempts("broken"), 3);
}

#[tokio::test]
async fn on_failure_continue_lets_the_run_go_on() {
    let h = Harness::new();
    let spec = PlanSpec::new("cont")
        .step(
            step("optional")
                .param("fail", true)
                .on_failure(OnFailure::Continue),
        )
        .step(step("after-it").after(["optional"]))
        .step(step("other"));
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{}",
        report.to_markdown()
    );
    assert_eq!(report.steps[0].status, StepStatus::Failed);
    assert_eq!(report.steps[1].status, StepStatus::Succeeded);
    assert_eq!(report.steps[2].status, StepStatus::Succeeded);
}

#[tokio::test]
async fn a_failure_rolls_back_completed_steps_in_reverse_order() {
    let h = Harness::new();
    let spec = PlanSpec::new("rb")
        .step(step("a").param("rollback", true).rollback_own())
        .step(
            step("b")
                .param("rollback", true)
                .rollback_own()
                .after(["a"]),
        )
        .step(step("no-rollback").after(["b"]))
        .step(
            step("c")
                .after(["no-rollback"])
                .rollback_with("test.step", json!({"value": "${steps.b.state.value}"})),
        )
        .step(step("boom").param("fail", true).after(["c"]))
        .step(
            step("never")
                .param("rollback", true)
                .rollback_own()
                .after(["boom"]),
        );
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(
        report.status,
        RunStatus::RolledBack,
        "{}",
        report.to_markdown()
    );
    let l = &h.log;
    // c's rollback is another action run under c's name; then b, then a.
    let c_undo = l.events().iter().rposition(|e| e == "start:c").unwrap();
    assert!(c_undo > l.pos("fail:boom"));
    assert!(c_undo < l.pos("undo:b") && l.pos("undo:b") < l.pos("undo:a"));
    let status = |n: &str| report.steps.iter().find(|s| s.name == n).unwrap().status;
    assert_eq!(status("a"), StepStatus::RolledBack);
    assert_eq!(status("b"), StepStatus::RolledBack);
    assert_eq!(status("c"), StepStatus::RolledBack);
    assert_eq!(status("no-rollback"), StepStatus::Succeeded);
    assert_eq!(status("boom"), StepStatus::Failed);
    assert_eq!(status("never"), StepStatus::Skipped);
    assert!(!l.events().contains(&"undo:never".to_string()));
    // A rolled-back run is over.
    let err = h
        .executor()
        .resume(&report.run_id, &h.registry)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn a_crashed_run_resumes_without_redoing_completed_steps() {
    let h = Harness::new();
    h.log.block.store(true, Ordering::SeqCst);
    let spec = PlanSpec::new("crash")
        .step(step("a"))
        .step(step("b").after(["a"]))
        .step(step("hangs").param("block", true).after(["b"]))
        .step(step("last").after(["hangs"]));
    let plan = h.check(&spec);
    let executor = h
        .executor()
        .with_options(RunOptions::default().with_run_id("crash-1"));
    // The process "dies" while `hangs` runs: the run future is dropped.
    let crashed = tokio::time::timeout(Duration::from_millis(500), executor.run(&plan)).await;
    assert!(crashed.is_err(), "the run should still be hanging");
    let journal = JournalStore::local(h.dir.path())
        .load("crash-1")
        .await
        .unwrap();
    assert_eq!(journal.status, RunStatus::Running);
    assert_eq!(journal.step("a").unwrap().status, StepStatus::Succeeded);
    assert_eq!(journal.step("hangs").unwrap().status, StepStatus::Running);
    assert_eq!(
        journal.step("hangs").unwrap().checkpoint,
        Some(json!({"saw": "original"}))
    );
    assert_eq!(journal.step("last").unwrap().status, StepStatus::Pending);

    // Resume in a "new process": a fresh executor from the journal alone.
    h.log.block.store(false, Ordering::SeqCst);
    let report = h.executor().resume("crash-1", &h.registry).await.unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{}",
        report.to_markdown()
    );
    assert_eq!(report.resumes, 1);
    assert_eq!(h.log.attempts("a"), 1, "a was redone");
    assert_eq!(h.log.attempts("b"), 1, "b was redone");
    assert_eq!(h.log.attempts("hangs"), 2);
    assert_eq!(h.log.attempts("last"), 1);
    // The re-run saw what the interrupted attempt checkpointed.
    let seen = h.log.seen_checkpoints.lock().unwrap().clone();
    let hangs: Vec<_> = seen
        .into_iter()
        .filter(|(s, _)| s == "hangs")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(hangs, vec![None, Some(json!({"saw": "original"}))]);
    // A finished run cannot be resumed.
    assert!(matches!(
        h.executor()
            .resume("crash-1", &h.registry)
            .await
            .unwrap_err(),
        Error::Conflict { .. }
    ));
}

#[tokio::test]
async fn an_aborted_run_resumes_at_the_failed_step() {
    let h = Harness::new();
    h.log.fail.store(true, Ordering::SeqCst);
    let spec = PlanSpec::new("abort")
        .step(step("a"))
        .step(step("flaky").param("fail_flag", true).after(["a"]))
        .step(step("c").after(["flaky"]));
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    h.log.fail.store(false, Ordering::SeqCst);
    let report = h
        .executor()
        .resume(&report.run_id, &h.registry)
        .await
        .unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{}",
        report.to_markdown()
    );
    assert_eq!(
        (
            h.log.attempts("a"),
            h.log.attempts("flaky"),
            h.log.attempts("c")
        ),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn step_outputs_feed_later_steps() {
    let h = Harness::new();
    let spec = PlanSpec::new("flow")
        .step(step("first").param("value", "abc"))
        .step(
            step("second")
                .param("value", "got ${steps.first.state.value} in ${plan}")
                .after(["first"]),
        );
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    let journal = JournalStore::local(h.dir.path())
        .load(&report.run_id)
        .await
        .unwrap();
    assert_eq!(
        journal
            .step("second")
            .unwrap()
            .output
            .as_ref()
            .unwrap()
            .state["value"],
        json!("got abc in flow")
    );
}

#[tokio::test]
async fn the_journal_is_copied_to_the_repository_and_resumable_from_there() {
    use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};
    let key = Identities::generate();
    let repo = Repository::init(
        &Location::parse("memory://plan-journal").unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    let h = Harness::new();
    h.log.fail.store(true, Ordering::SeqCst);
    let spec = PlanSpec::new("repo")
        .step(step("a"))
        .step(step("b").param("fail_flag", true).after(["a"]));
    let plan = h.check(&spec);
    let store = JournalStore::local(h.dir.path()).with_repository(repo.clone());
    let report = Executor::new(store).run(&plan).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);

    // Another machine: empty local directory, same repository.
    let elsewhere = tempfile::tempdir().unwrap();
    let store = JournalStore::local(elsewhere.path()).with_repository(repo.clone());
    let journal = store.load(&report.run_id).await.unwrap();
    assert_eq!(journal.step("a").unwrap().status, StepStatus::Succeeded);
    h.log.fail.store(false, Ordering::SeqCst);
    let report = Executor::new(store)
        .resume(&report.run_id, &h.registry)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(h.log.attempts("a"), 1);

    let missing = JournalStore::local(elsewhere.path())
        .load("nope")
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }));
}

#[tokio::test]
async fn approvals_come_from_yes_or_an_approver_and_never_hang() {
    let h = Harness::new();
    let spec = PlanSpec::new("approve")
        .step(StepSpec::new("go", "approve").param("prompt", "promote the DR database?"));
    let plan = h.check(&spec);
    // Nobody to ask: a clear failure, not a hang.
    let report = h.executor().run(&plan).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.steps[0].error.as_deref().unwrap().contains("--yes"));
    // --yes.
    let report = h
        .executor()
        .with_options(RunOptions::default().assume_yes(true))
        .run(&plan)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    // An approval file: absent, then naming the step.
    let file = h.dir.path().join("approvals");
    let ex = h
        .executor()
        .with_approver(Arc::new(FileApprover::new(&file)));
    let report = ex.run(&plan).await.unwrap();
    assert!(report.steps[0]
        .error
        .as_deref()
        .unwrap()
        .contains("refused"));
    std::fs::write(&file, "# ops on call\nother-step\ngo\n").unwrap();
    assert_eq!(ex.run(&plan).await.unwrap().status, RunStatus::Succeeded);
}

#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    retries: AtomicU32,
}

impl dr_core::plan::PlanObserver for Recorder {
    fn step_started(&self, step: &str, attempt: u32) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("start {step} {attempt}"));
    }
    fn step_retrying(&self, _step: &str, _attempt: u32, error: &Error, _delay: Duration) {
        assert!(error.is_retryable());
        self.retries.fetch_add(1, Ordering::SeqCst);
    }
    fn step_finished(&self, r: &dr_core::plan::StepRecord) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("end {} {:?}", r.name, r.status));
    }
    fn run_finished(&self, r: &dr_core::plan::RunReport) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("run {:?}", r.status));
    }
}

#[tokio::test]
async fn the_observer_sees_progress_and_the_report_renders() {
    let h = Harness::new();
    let obs = Arc::new(Recorder::default());
    let spec = PlanSpec::new("observed")
        .rto("1h")
        .step(step("a").param("fail_times", 1).retries(1, "10ms"))
        .step(
            StepSpec::new("say", "exec")
                .param("argv", json!(["echo", "hello from exec"]))
                .after(["a"]),
        );
    let report = h
        .executor()
        .with_observer(obs.clone())
        .run(&h.check(&spec))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(obs.retries.load(Ordering::SeqCst), 1);
    assert_eq!(
        *obs.calls.lock().unwrap(),
        [
            "start a 1",
            "start a 2",
            "end a Succeeded",
            "start say 1",
            "end say Succeeded",
            "run Succeeded"
        ]
    );
    assert_eq!(report.within_rto, Some(true));
    let md = report.to_markdown();
    assert!(md.contains("| say | exec | ok | 1 |"), "{md}");
    assert!(
        md.contains("hello from exec") && md.contains("RTO: 1h — met"),
        "{md}"
    );
    let back: dr_core::plan::RunReport = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(back, report);
}

#[tokio::test]
async fn a_run_over_its_rto_is_reported_as_such() {
    let h = Harness::new();
    let spec = PlanSpec::new("late")
        .rto("100ms")
        .step(step("slow").param("sleep_ms", 300));
    let report = h.executor().run(&h.check(&spec)).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.within_rto, Some(false));
    assert!(report.to_markdown().contains("**not met**"));
}

#[tokio::test]
async fn drills_are_judged_stored_and_listed() {
    use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};
    let key = Identities::generate();
    let repo = Repository::init(
        &Location::parse("memory://plan-drills").unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    let h = Harness::new();
    let mut spec = PlanSpec::new("drill")
        .rto("1m")
        .variable("target", Some("production"))
        .step(step("backup").drill(&[DrillCheck::Backup]))
        .step(
            step("restore")
                .param("value", "${target}")
                .drill(&[DrillCheck::Restore])
                .after(["backup"]),
        )
        .step(
            step("verify")
                .drill(&[DrillCheck::Integrity, DrillCheck::App])
                .after(["restore"]),
        );
    spec.drill = Some(dr_core::plan::DrillSpec {
        variables: BTreeMap::from([("target".into(), "scratch".into())]),
    });
    let options = CheckOptions::default().drill(true);
    let plan = check(&spec, &h.registry, &options).unwrap();
    assert_eq!(
        plan.variables()["target"],
        "scratch",
        "a drill uses the scratch targets"
    );
    let report = drill::run_drill(&h.executor(), &plan, Some(&repo))
        .await
        .unwrap();
    assert!(report.passed, "{}", report.to_markdown());
    assert_eq!(report.checklist.len(), 5);

    // A drill whose integrity step fails and whose plan has no app check.
    let spec = PlanSpec::new("drill")
        .rto("1m")
        .step(step("backup").drill(&[DrillCheck::Backup, DrillCheck::Restore]))
        .step(
            step("verify")
                .param("fail", true)
                .on_failure(OnFailure::Continue)
                .drill(&[DrillCheck::Integrity]),
        );
    let plan = check(&spec, &h.registry, &options).unwrap();
    let failed = drill::run_drill(&h.executor(), &plan, Some(&repo))
        .await
        .unwrap();
    assert!(!failed.passed);
    let item = |c: &str| {
        failed
            .checklist
            .iter()
            .find(|i| i.check == c)
            .unwrap()
            .clone()
    };
    assert!(item("backup").passed && item("restore").passed);
    assert!(!item("integrity").passed && !item("app").passed);

    // The HTML report: the outcome, each checklist line ticked or not, one
    // timeline lane per step with the RTO marked; nothing fetched, no script.
    let html = failed.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("<span class=\"bad\">FAILED</span></h1>"),
        "{html}"
    );
    assert_eq!(
        html.matches("&#10003; pass").count(),
        3,
        "backup, restore, rto: {html}"
    );
    assert_eq!(
        html.matches("&#10007; FAIL").count(),
        2,
        "integrity, app: {html}"
    );
    assert_eq!(html.matches("<div class=\"lane\">").count(), 2, "{html}");
    assert_eq!(html.matches("class=\"rto\"").count(), 2, "{html}");
    assert!(
        html.contains("<td class=\"bad\">FAILED</td>"),
        "the failed step: {html}"
    );
    for fetch in ["<script", "src=", "href=", "url("] {
        assert!(!html.contains(fetch), "{fetch}: {html}");
    }
    assert!(report
        .to_html()
        .contains("<span class=\"ok\">PASSED</span>"));

    let list = drill::list_drills(&repo).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, failed.id, "newest first");
    assert_eq!(
        drill::last_drill(&repo).await.unwrap().unwrap().id,
        failed.id
    );
    assert_eq!(drill::load_drill(&repo, &report.id).await.unwrap(), report);
    // Reports are never overwritten.
    let again = drill::store_drill(&repo, &report).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::Storage(dr_storage::Error::AlreadyExists { .. })
        ),
        "{again}"
    );
    assert_eq!(again.kind(), ErrorKind::Failed);
}
