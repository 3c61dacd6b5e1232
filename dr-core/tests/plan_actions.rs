//! The generic actions: `exec` runs real programs; `http.check` and
//! `notify.webhook` run against a wiremock HTTP server (the "real server"
//! here is whatever a plan points at: a health endpoint, a Slack-compatible
//! webhook; wiremock plays both and records what it received).

use std::time::{Duration, Instant};

use dr_core::plan::{actions, ActionContext, ActionRegistry};
use dr_core::{Error, ErrorKind};
use serde_json::json;

fn registry() -> ActionRegistry {
    let mut r = ActionRegistry::new();
    actions::register(&mut r);
    r
}

fn ctx() -> ActionContext {
    ActionContext::new("run", "step")
}

#[tokio::test]
async fn exec_runs_argv_without_a_shell_and_captures_output() {
    let r = registry();
    let a = r
        .build(
            "exec",
            &json!({ "argv": ["sh", "-c", "echo out:$GREETING; echo err >&2", "$HOME"], "env": { "GREETING": "hi" } }),
        )
        .unwrap();
    assert!(
        !a.describe().contains("hi"),
        "env values are not shown: {}",
        a.describe()
    );
    let out = a.run(&ctx()).await.unwrap();
    assert_eq!(out.state["stdout"], json!("out:hi"));
    assert!(out.log.contains("[stderr]\nerr"), "{}", out.log);

    // No shell: "$HOME" reaches the program as is.
    let a = r
        .build("exec", &json!({ "argv": ["echo", "$HOME; true"] }))
        .unwrap();
    assert_eq!(
        a.run(&ctx()).await.unwrap().state["stdout"],
        json!("$HOME; true")
    );
    // Shell when asked.
    let a = r
        .build(
            "exec",
            &json!({ "argv": ["echo a | tr a b"], "shell": true }),
        )
        .unwrap();
    assert_eq!(a.run(&ctx()).await.unwrap().state["stdout"], json!("b"));
}

#[tokio::test]
async fn exec_failures_name_the_program_and_show_stderr() {
    let r = registry();
    let err = r
        .build(
            "exec",
            &json!({ "argv": ["sh", "-c", "echo broken pipe >&2; exit 3"] }),
        )
        .unwrap()
        .run(&ctx())
        .await
        .unwrap_err();
    let text = dr_core::plan::error_chain(&err);
    assert!(
        text.contains("\"sh\"") && text.contains("status 3") && text.contains("broken pipe"),
        "{text}"
    );
    assert!(!err.is_retryable());

    let ok = r
        .build(
            "exec",
            &json!({ "argv": ["sh", "-c", "exit 3"], "success_codes": [0, 3] }),
        )
        .unwrap()
        .run(&ctx())
        .await;
    assert!(ok.is_ok());

    let missing = r
        .build("exec", &json!({ "argv": ["/nonexistent/tool"] }))
        .unwrap()
        .run(&ctx())
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");

    for bad in [
        json!({ "argv": [] }),
        json!({ "argv": ["a", "b"], "shell": true }),
    ] {
        let e = r.build("exec", &bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
    }
}

#[tokio::test]
async fn exec_output_is_bounded_and_a_dropped_run_kills_the_program() {
    let r = registry();
    let a = r
        .build("exec", &json!({ "argv": ["sh", "-c", "yes line | head -c 1000000; echo END"], "max_capture": 4096 }))
        .unwrap();
    let out = a.run(&ctx()).await.unwrap();
    assert!(out.log.len() < 5000, "{}", out.log.len());
    assert!(out.log.contains("bytes left out") && out.log.trim_end().ends_with("END"));

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("survived");
    let a = r
        .build(
            "exec",
            &json!({ "argv": ["sh", "-c", format!("sleep 1; touch {}", marker.display())] }),
        )
        .unwrap();
    let started = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.run(&ctx()))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !marker.exists(),
        "the program went on after its step timed out"
    );
}

#[tokio::test]
async fn wait_waits() {
    let a = registry()
        .build("wait", &json!({ "duration": "150ms" }))
        .unwrap();
    let t = Instant::now();
    a.run(&ctx()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[cfg(feature = "http")]
mod http {
    use super::*;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn http_check_retries_until_healthy() {
        let server = MockServer::start().await;
        // Unhealthy twice, then healthy.
        Mock::given(method("GET"))
            .and(path("/healthz"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/healthz"))
            .and(header("authorization", "Bearer t0ken"))
            .respond_with(ResponseTemplate::new(200).set_body_string("status: ok"))
            .mount(&server)
            .await;
        let a = registry()
            .build(
                "http.check",
                &json!({
                    "url": format!("{}/healthz?key=secret", server.uri()),
                    "body_contains": "ok",
                    "interval": "50ms",
                    "timeout": "5s",
                    "headers_env": { "Authorization": "DR_TEST_HEALTH_TOKEN" }
                }),
            )
            .unwrap();
        assert!(!a.describe().contains("secret"), "{}", a.describe());
        // The header's value from the run's environment, not the process's.
        let mut c = ctx();
        c.env
            .insert("DR_TEST_HEALTH_TOKEN".into(), "Bearer t0ken".into());
        let out = a.run(&c).await.unwrap();
        assert_eq!(out.state["tries"], json!(3));
        assert_eq!(out.state["status"], json!(200));
    }

    #[tokio::test]
    async fn http_check_gives_up_at_its_timeout_or_the_steps_deadline() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("degraded"))
            .mount(&server)
            .await;
        let r = registry();
        let a = r
            .build(
                "http.check",
                &json!({ "url": server.uri(), "body_contains": "ok", "interval": "50ms", "timeout": "300ms" }),
            )
            .unwrap();
        let t = Instant::now();
        let err = a.run(&ctx()).await.unwrap_err();
        assert!(matches!(err, Error::VerificationFailed { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2));

        // The step's deadline is shorter than the check's own timeout.
        let a = r
            .build("http.check", &json!({ "url": server.uri(), "body_contains": "ok", "interval": "50ms", "timeout": "1m" }))
            .unwrap();
        let mut c = ctx();
        c.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(300));
        let t = Instant::now();
        assert!(a.run(&c).await.is_err());
        assert!(t.elapsed() < Duration::from_secs(2));

        // Nothing listening: unavailable, which the executor may retry.
        let a = r
            .build(
                "http.check",
                &json!({ "url": "http://127.0.0.1:9/", "interval": "50ms", "timeout": "200ms" }),
            )
            .unwrap();
        let err = a.run(&ctx()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");

        for (params, key) in [
            (json!({ "url": "ftp://x" }), "http.check.url"),
            (
                json!({ "url": "http://x", "expect_status": 1000 }),
                "http.check.expect_status",
            ),
            (
                json!({ "url": "http://x", "timeout": "soon" }),
                "http.check.timeout",
            ),
        ] {
            match r.build("http.check", &params) {
                Err(Error::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn webhook_posts_slack_compatible_json() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/services/T000/B000/XXXX"))
            .and(body_json(
                json!({ "text": "DNS switched", "channel": "#ops" }),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .expect(1)
            .mount(&server)
            .await;
        let a = registry()
            .build(
                "notify.webhook",
                &json!({ "url_env": "DR_TEST_WEBHOOK", "text": "DNS switched", "payload": { "channel": "#ops" } }),
            )
            .unwrap();
        assert!(!a.describe().contains("XXXX"));
        let mut c = ctx();
        c.env.insert(
            "DR_TEST_WEBHOOK".into(),
            format!("{}/services/T000/B000/XXXX", server.uri()),
        );
        let out = a.run(&c).await.unwrap();
        assert!(!out.summary.contains("XXXX"), "{}", out.summary);
        server.verify().await;
    }

    #[tokio::test]
    async fn webhook_errors_are_classified() {
        let server = MockServer::start().await;
        Mock::given(path("/busy"))
            .respond_with(ResponseTemplate::new(429))
            .mount(&server)
            .await;
        Mock::given(path("/gone"))
            .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
            .mount(&server)
            .await;
        let r = registry();
        let run = |p: &str| {
            let a = r
                .build(
                    "notify.webhook",
                    &json!({ "url": format!("{}{p}", server.uri()), "text": "x" }),
                )
                .unwrap();
            async move { a.run(&ctx()).await.unwrap_err() }
        };
        assert!(run("/busy").await.is_retryable());
        let gone = run("/gone").await;
        assert!(!gone.is_retryable() && dr_core::plan::error_chain(&gone).contains("no_service"));
        let a = r
            .build(
                "notify.webhook",
                &json!({ "url_env": "DR_TEST_UNSET_WEBHOOK", "text": "x" }),
            )
            .unwrap();
        assert_eq!(a.run(&ctx()).await.unwrap_err().kind(), ErrorKind::Usage);
        assert!(r.build("notify.webhook", &json!({ "text": "x" })).is_err());
    }
}
