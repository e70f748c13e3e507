//! The web UI in real headless Chromium (Debian's `chromium` through `chromedriver`), against
//! the pipeline `dray demo` builds: sign-in (a wrong token refused), the graph with its three
//! Stages and their Freight, a promotion to prod started with clicks and followed live to its
//! end with its log, a promotion started outside the page showing up without a reload, a
//! Warehouse refreshed from the page finding a new commit, and an approval; and a person signing
//! in with OpenID Connect (a real provider, npm's `oidc-provider`), the page refreshing the ID
//! token before it expires. Screenshots of each view are written to
//! `$CARGO_TARGET_TMPDIR/ui-screenshots/` for a person to look at.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dray_tests::browser::Browser;
use dray_tests::dray_bin;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// `dray demo` running until dropped, with its address, directory and token.
struct Demo {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    token: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo and returns once both Freight wait at prod's gate.
    fn start() -> Demo {
        let dir = tempfile::tempdir().expect("a directory");
        let mut child = Command::new(dray_bin())
            .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dray demo starts");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end, so the demo never writes into a closed pipe.
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut url = None;
        let mut said = String::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(300))
                .unwrap_or_else(|_| panic!("the demo did not reach prod's gate:\n{said}"));
            said.push_str(&line);
            said.push('\n');
            if let Some(rest) = line.strip_prefix("Starting the daemon on ") {
                url = Some(rest.trim_end_matches('…').to_string());
            }
            if line.starts_with("Or open ") {
                assert!(
                    line.contains("/#/projects/demo"),
                    "the demo prints the UI's address: {line}"
                );
                break;
            }
        }
        let token = std::fs::read_to_string(dir.path().join("data/token"))
            .expect("the token")
            .trim()
            .to_string();
        Demo {
            child,
            url: url.expect("the demo says where the daemon is"),
            dir,
            token,
        }
    }

    /// Calls the API as the CLI would (blocking, from the test's async body).
    fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        tokio::task::block_in_place(|| self.call(method, path, body))
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let client = dray_tests::blocking_client();
        let mut request = client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("the API answers");
        let status = response.status();
        let body: Value = response.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A new commit on the application's main branch (as a developer's push).
    fn commit(&self, message: &str) {
        let work = self.dir.path().join("work");
        let app = self.dir.path().join("app.git");
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.test"])
                .args(args)
                .output()
                .expect("git runs");
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        if !work.exists() {
            git(&[
                "clone",
                "-q",
                &app.display().to_string(),
                &work.display().to_string(),
            ]);
        }
        let w = work.display().to_string();
        std::fs::write(work.join("VERSION"), message).expect("a change");
        git(&["-C", &w, "add", "-A"]);
        git(&["-C", &w, "commit", "-q", "-m", message]);
        git(&["-C", &w, "push", "-q", "origin", "HEAD:main"]);
    }
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

/// A script: the text of the graph's box for Stage `name` (empty while it is not drawn).
fn stage_box(name: &str) -> String {
    format!(r#"return document.querySelector('.node.stage[data-name="{name}"]')?.innerText ?? ''"#)
}

/// A script: whether the graph's box for Stage `name` shows `text`.
fn stage_box_shows(name: &str, text: &str) -> String {
    format!(
        r#"return (document.querySelector('.node.stage[data-name="{name}"]')?.innerText ?? '').includes('{text}')"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pipeline_in_a_browser() {
    let demo = tokio::task::spawn_blocking(Demo::start)
        .await
        .expect("demo");
    let browser = Browser::start().await;
    let shots = screenshots();
    let home = format!("{}/#/projects/demo", demo.url);

    // A wrong token is refused, and the page says so.
    browser.goto(&home).await;
    browser
        .until(
            "the sign-in form",
            "return !!document.querySelector('form.sign-in')",
            WAIT,
        )
        .await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("form.sign-in button[type=submit]").await;
    browser
        .until(
            "the refusal",
            "return document.querySelector('form.sign-in .error')?.textContent.includes('refused')",
            WAIT,
        )
        .await;
    browser.screenshot(&shots, "1-sign-in-refused").await;
    assert_eq!(
        browser
            .run("return localStorage.getItem('dray.token')", vec![])
            .await,
        Value::Null,
        "a refused token is not kept"
    );

    // The right one shows the pipeline: the Warehouse and three Stages, each with its Freight.
    browser.type_into("#token", &demo.token).await;
    browser.click("form.sign-in button[type=submit]").await;
    let stages = browser
        .until(
            "three Stages in the graph",
            "const s = [...document.querySelectorAll('.node.stage')].map(n => n.dataset.name); return s.length === 3 ? s : null",
            WAIT,
        )
        .await;
    assert_eq!(stages, json!(["dev", "prod", "staging"]));
    let freight = demo.api(reqwest::Method::GET, "/v1/projects/demo/freight", None);
    let newest = freight["items"]
        .as_array()
        .expect("freight")
        .iter()
        .max_by_key(|f| f["discoveredAt"].as_str().unwrap_or_default().to_string())
        .expect("two Freight")["alias"]
        .as_str()
        .expect("an alias")
        .to_string();
    for stage in ["dev", "staging"] {
        let text = browser.run(&stage_box(stage), vec![]).await;
        let text = text.as_str().unwrap_or_default();
        assert!(
            text.contains(&newest) && text.contains("Verified"),
            "{stage}: {text}"
        );
    }
    let prod = browser.run(&stage_box("prod"), vec![]).await;
    assert!(
        prod.as_str().is_some_and(
            |t| t.contains("holds nothing yet") && t.contains(&format!("newer: {newest}"))
        ),
        "{prod}"
    );
    assert!(
        browser
            .run(
                "return document.querySelectorAll('svg.edges path').length",
                vec![]
            )
            .await
            == json!(3),
        "an edge from the Warehouse to dev, dev to staging, staging to prod"
    );
    browser.screenshot(&shots, "2-pipeline").await;

    // Promote the newest Freight to prod with clicks: its panel, the Freight, the confirmation
    // (which shows what changes), then the Promotion's page, followed live to Succeeded.
    browser.click(r#".node.stage[data-name="prod"]"#).await;
    let promote = format!(r#".panel .freight-row[data-alias="{newest}"] button.primary"#);
    browser
        .until(
            "the Freight's Promote button in prod's panel",
            &format!(
                "return !!document.querySelector('{}')",
                promote.replace('\'', "\\'")
            ),
            WAIT,
        )
        .await;
    browser.screenshot(&shots, "3-prod-panel").await;
    browser.click(&promote).await;
    let change = browser
        .until(
            "the confirmation",
            "return document.querySelector('dialog.confirm[open]')?.innerText",
            WAIT,
        )
        .await;
    assert!(
        change
            .as_str()
            .is_some_and(|c| c.contains(&newest) && c.contains("app.git@")),
        "the confirmation shows the Freight and its commit: {change}"
    );
    browser.screenshot(&shots, "4-confirm").await;
    browser.click("dialog.confirm button[value=ok]").await;
    browser
        .until(
            "the Promotion's page, Succeeded",
            "return document.querySelector('.page .state')?.textContent === 'Succeeded'",
            WAIT,
        )
        .await;
    let log = browser
        .until(
            "log lines",
            "const l = [...document.querySelectorAll('.log li')].map(li => li.innerText); return l.length > 1 ? l : null",
            WAIT,
        )
        .await;
    assert!(
        log.to_string().contains("git clone") && log.to_string().contains("started"),
        "{log}"
    );
    let steps = browser
        .run("return [...document.querySelectorAll('table.steps tbody tr')].map(r => r.children[2].textContent)", vec![])
        .await;
    assert!(
        steps
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|x| x == "Succeeded")),
        "{steps}"
    );
    browser.screenshot(&shots, "5-promotion").await;

    // Back on the graph, a promotion started elsewhere (the API, as the CLI calls it) shows up
    // without a reload: prod goes to the older Freight.
    browser.goto(&home).await;
    browser
        .until(
            "prod holding the Freight",
            &stage_box_shows("prod", &newest),
            WAIT,
        )
        .await;
    let older = freight["items"]
        .as_array()
        .expect("freight")
        .iter()
        .map(|f| f["alias"].as_str().unwrap_or_default().to_string())
        .find(|a| a != &newest)
        .expect("the older Freight");
    demo.api(
        reqwest::Method::POST,
        "/v1/projects/demo/stages/prod/promote",
        Some(json!({"freight": older})),
    );
    browser
        .until(
            "prod holding the older Freight, without a reload",
            &stage_box_shows("prod", &older),
            WAIT,
        )
        .await;

    // A new commit, found by refreshing the Warehouse from its panel.
    demo.commit("app 1.2.0");
    browser.click(r#".node.warehouse[data-name="app"]"#).await;
    browser
        .until("the Refresh button", "return [...document.querySelectorAll('.panel button')].some(b => b.textContent === 'Refresh')", WAIT)
        .await;
    browser
        .run("[...document.querySelectorAll('.panel button')].find(b => b.textContent === 'Refresh').click()", vec![])
        .await;
    let third = browser
        .until(
            "a third Freight in the Warehouse's timeline",
            "const rows = [...document.querySelectorAll('.panel .freight-row')]; return rows.length === 3 ? [rows[0].dataset.alias, rows[0].dataset.freight] : null",
            WAIT,
        )
        .await;
    let (third, third_name) = (
        third[0].as_str().expect("an alias").to_string(),
        third[1].as_str().expect("a name").to_string(),
    );
    browser.screenshot(&shots, "6-warehouse").await;

    // Where may it go? Dev takes it (or has it), prod may not and says why.
    let row = format!(r#".panel .freight-row[data-alias="{third}"]"#);
    browser
        .run(&format!("[...document.querySelectorAll('{row} button')].find(b => b.textContent.startsWith('Where')).click()"), vec![])
        .await;
    let verdicts = browser
        .until(
            "the Stages' verdicts",
            &format!("const v = [...document.querySelectorAll('{row} .verdicts li')].map(li => li.innerText); return v.length === 3 ? v : null"),
            WAIT,
        )
        .await;
    let verdicts: Vec<String> = serde_json::from_value(verdicts).expect("texts");
    assert!(
        verdicts[0].starts_with("dev: ") && !verdicts[2].contains("may take it"),
        "{verdicts:?}"
    );
    assert!(
        verdicts[2].starts_with("prod: ") && verdicts[2].len() > "prod: ".len(),
        "{verdicts:?}"
    );

    // Approve it for prod from prod's panel (it is not verified in staging yet, so prod cannot
    // take it until approved), then it can be promoted.
    browser.click(r#".node.stage[data-name="prod"]"#).await;
    browser
        .until(
            "the Approve button",
            &format!("return [...document.querySelectorAll('{row} button')].some(b => b.textContent === 'Approve')"),
            WAIT,
        )
        .await;
    let why = browser
        .run(
            &format!("return document.querySelector('{row} .why')?.textContent"),
            vec![],
        )
        .await;
    assert!(
        why.as_str().is_some_and(|w| !w.is_empty()),
        "the row says why prod cannot take it: {why}"
    );
    browser
        .run(&format!("[...document.querySelectorAll('{row} button')].find(b => b.textContent === 'Approve').click()"), vec![])
        .await;
    browser
        .until(
            "the approved Freight promotable in prod's panel",
            &format!("return document.querySelector('{row}')?.innerText.includes('approved for prod') && !!document.querySelector('{row} button.primary')"),
            WAIT,
        )
        .await;
    browser.screenshot(&shots, "7-approved").await;
    let approved = demo.api(
        reqwest::Method::GET,
        &format!("/v1/projects/demo/freight/{third_name}"),
        None,
    );
    assert!(
        approved["status"]["approvedFor"].get("prod").is_some(),
        "{approved:#}"
    );

    // A verification's page, from dev's panel: its phase and its log.
    browser.goto(&format!("{home}/stages/staging")).await;
    browser.click(".panel dl a[href*='/analysisruns/']").await;
    browser
        .until(
            "the verification Successful, with its log",
            "return document.querySelector('.page .state')?.textContent === 'Successful' && document.querySelectorAll('.log li').length > 1",
            WAIT,
        )
        .await;
    browser.screenshot(&shots, "8-verification").await;

    // With the keyboard: find prod, Enter to focus its box, Enter to open its panel.
    browser.goto(&home).await;
    browser
        .until("the graph", &stage_box_shows("prod", "prod"), WAIT)
        .await;
    browser
        .type_into("input[type=search]", "prod\u{E007}")
        .await;
    browser
        .until(
            "prod's box focused",
            "return document.activeElement?.dataset?.name === 'prod'",
            WAIT,
        )
        .await;
    browser
        .client
        .active_element()
        .await
        .expect("the focused box")
        .send_keys("\u{E007}")
        .await
        .expect("Enter");
    browser
        .until(
            "prod's panel",
            "return document.querySelector('.panel h2')?.textContent === 'prod'",
            WAIT,
        )
        .await;

    // Text from steps is shown as text: a step's output that is markup stays characters.
    let hostile = r#"<img src=x onerror="window.pwned=1"><b>bold</b>"#;
    demo.api(
        reqwest::Method::POST,
        "/v1/apply",
        Some(json!({"sources": [{"name": "hostile.yaml", "content": format!(
            "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: hostile, namespace: demo}}\nspec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {{direct: true}}\n  promotionTemplate:\n    spec:\n      steps:\n      - uses: compose-output\n        as: note\n        config: {{html: {}}}\n",
            serde_json::to_string(hostile).expect("json")
        )}]})),
    );
    let made = demo.api(
        reqwest::Method::POST,
        "/v1/projects/demo/stages/hostile/promote",
        Some(json!({"freight": older})),
    );
    let promotion = made["metadata"]["name"]
        .as_str()
        .expect("a promotion")
        .to_string();
    browser
        .goto(&format!("{home}/promotions/{promotion}"))
        .await;
    browser
        .until(
            "the hostile output shown as text",
            "const t = document.querySelector('.outputs')?.textContent ?? ''; return t.includes('<img src=x onerror=') && t.includes('<b>bold</b>')",
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .run("return [window.pwned ?? null, document.querySelectorAll('main img, main b').length]", vec![])
            .await,
        json!([null, 0]),
        "no markup from the step's output became elements"
    );

    // The list view shows the same Stages, in pipeline order, and narrows with the search.
    browser.goto(&format!("{home}?list")).await;
    let rows = browser
        .until(
            "the list",
            "const r = [...document.querySelectorAll('table.stages tbody tr td:first-child')].map(td => td.innerText); return r.length === 4 ? r : null",
            WAIT,
        )
        .await;
    assert_eq!(rows, json!(["dev", "hostile", "staging", "prod"]));
    browser.type_into("input[type=search]", "prod").await;
    browser
        .until(
            "one row left",
            "return document.querySelectorAll('table.stages tbody tr').length === 1",
            WAIT,
        )
        .await;
    browser.screenshot(&shots, "9-list").await;

    // The projects page shows each project at a glance: its four Stages by state.
    browser.goto(&format!("{}/#/", demo.url)).await;
    let card = browser
        .until(
            "the demo's card",
            r#"return document.querySelector('.projects a[data-name="demo"]')?.innerText ?? ''"#,
            WAIT,
        )
        .await;
    assert!(
        card.as_str()
            .unwrap_or_default()
            .contains("4 Stages · 1 Warehouse"),
        "{card}"
    );
    let counted = browser
        .run(
            r#"return [...document.querySelectorAll('.projects a[data-name="demo"] .state')].reduce((n, s) => n + parseInt(s.textContent), 0)"#,
            vec![],
        )
        .await;
    assert_eq!(counted, json!(4), "{card}");
    browser.screenshot(&shots, "10-projects").await;
    println!("screenshots: {}", shots.display());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_openid_connect_and_the_page_keeps_the_sign_in_fresh() {
    use dray::auth::Role;
    use dray::auth::oidc::{GroupRole, OidcConfig};
    use dray_tests::oidc::{OidcProvider, approve};
    // ID tokens live 20 s: the page refreshes one past half its life, before the daemon
    // would refuse it.
    let provider =
        tokio::task::block_in_place(|| OidcProvider::start_with_ttl(&["alice=shop-devs"], 20));
    let daemon = dray_tests::Daemon::start_with_config(dray::Config {
        oidc: Some(OidcConfig {
            issuer_url: provider.issuer.clone(),
            client_id: "dray".into(),
            groups_claim: "groups".into(),
            scopes: vec!["groups".into()],
            roles: vec![GroupRole {
                group: "shop-devs".into(),
                role: Role::Promoter,
                projects: ["shop".to_string()].into(),
                all_projects: false,
            }],
        }),
        ..dray::Config::default()
    })
    .await
    .expect("the daemon starts");
    daemon
        .apply_ok(
            &(dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &dray_tests::manifests::stage(
                    "shop",
                    "dev",
                    "- uses: compose-output\n  config: {done: true}",
                )),
        )
        .await;
    let browser = Browser::start().await;
    let shots = screenshots();

    // The sign-in page offers the provider beside the API token.
    browser
        .goto(&format!("{}/#/projects/shop", daemon.url))
        .await;
    let offer = browser
        .until(
            "the provider's sign-in button",
            "return document.getElementById('sign-in-oidc')?.textContent || null",
            WAIT,
        )
        .await;
    let host = provider.issuer.trim_start_matches("http://");
    assert_eq!(offer, json!(format!("Sign in with {host}")));
    browser.screenshot(&shots, "oidc-1-sign-in").await;

    // Started: a code and the provider's address, as a link that opens elsewhere.
    browser.click("#sign-in-oidc").await;
    let code = browser
        .until(
            "the code to enter",
            "return document.getElementById('user-code')?.textContent || null",
            WAIT,
        )
        .await;
    let link = browser
        .run(
            "const a = document.getElementById('sign-in-link'); return [a.textContent, a.href, a.target, a.rel]",
            vec![],
        )
        .await;
    let uri = link[0].as_str().expect("the address").to_string();
    assert!(uri.starts_with(&provider.issuer), "{link}");
    assert!(
        link[1].as_str().unwrap_or_default().starts_with(&uri),
        "{link}"
    );
    assert_eq!(
        (&link[2], &link[3]),
        (&json!("_blank"), &json!("noopener noreferrer"))
    );
    browser.screenshot(&shots, "oidc-2-code").await;

    // Alice enters it at the provider (on her phone, say); the page goes on by itself to the
    // project, and says who is signed in.
    let code = code.as_str().expect("a code").to_string();
    tokio::task::block_in_place(|| approve(&uri, &code, "alice"));
    browser
        .until("the Stage dev", &stage_box("dev"), WAIT)
        .await;
    let who = browser
        .until(
            "who is signed in",
            "return document.getElementById('who')?.textContent || null",
            WAIT,
        )
        .await;
    assert_eq!(who, json!("alice@example.test"));
    browser.screenshot(&shots, "oidc-3-signed-in").await;
    let kept = browser
        .run(
            "return [localStorage.getItem('dray.token'), localStorage.getItem('dray.refresh')]",
            vec![],
        )
        .await;
    let first = kept[0].as_str().expect("the ID token is kept").to_string();
    assert!(first.starts_with("eyJ"), "{kept}");
    assert!(kept[1].is_string(), "and its refresh token: {kept}");

    // Past half its life the next request refreshes it first, and goes through.
    tokio::time::sleep(Duration::from_secs(11)).await;
    browser.click(r#".node.stage[data-name="dev"]"#).await;
    browser
        .until(
            "dev's panel",
            "return document.querySelector('.panel h2')?.textContent.includes('dev') || null",
            WAIT,
        )
        .await;
    let renewed = browser
        .until(
            "a refreshed ID token",
            &format!(
                "const t = localStorage.getItem('dray.token'); return t && t !== '{first}' ? t : null"
            ),
            WAIT,
        )
        .await;
    assert!(
        renewed.as_str().unwrap_or_default().starts_with("eyJ"),
        "{renewed}"
    );

    // Signing out forgets both.
    browser.click("#sign-out").await;
    browser
        .until(
            "the sign-in page",
            "return !!document.querySelector('form.sign-in')",
            WAIT,
        )
        .await;
    let kept = browser
        .run(
            "return [localStorage.getItem('dray.token'), localStorage.getItem('dray.refresh')]",
            vec![],
        )
        .await;
    assert_eq!(kept, json!([null, null]));
    browser.close().await;
}
