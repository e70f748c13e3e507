//! Promotion windows (Kargo's `promotionWindows`): a Deny window closes a Stage to manual and
//! auto-promotion alike, says until when, and auto-promotion goes ahead by itself when it ends.

use std::time::{Duration, Instant, SystemTime};

use dray_tests::{Daemon, manifests};
use serde_json::Value;

/// An iCal UTC date-time (`20261130T161000Z`) `offset` seconds from now.
fn ical(offset: i64) -> String {
    let now = SystemTime::now();
    let at = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
}

fn config(windows: &str) -> String {
    format!(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {{name: shop, namespace: shop}}\n\
         spec:\n  promotionPolicies:\n  - stageSelector: {{name: test}}\n    autoPromotionEnabled: true\n\
         \x20   autoRollback: {{onVerification: [Failed]}}\n  promotionWindows:\n{windows}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_window_holds_promotions_until_it_ends() {
    let daemon = Daemon::start().await;
    let base = manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage(
            "shop",
            "test",
            "- uses: compose-output\n  as: note\n  config: {stage: \"${{ ctx.stage }}\"}",
        );

    // A window that cannot be read is refused at apply, naming the field.
    let bad = config(
        "  - {name: freeze, kind: Deny, rrule: \"FREQ=FORTNIGHTLY\", dtstart: 20260101T000000Z, dtend: 20260102T000000Z}\n",
    );
    let refused = daemon.apply(&format!("{base}{bad}")).await;
    assert_eq!(refused.status(), 422);
    let said = refused.text().await.expect("a body");
    assert!(said.contains("spec.promotionWindows[0].rrule"), "{said}");

    // A freeze that ends in a few seconds.
    let freeze = config(&format!(
        "  - {{name: freeze, kind: Deny, dtstart: {}, dtend: {}}}\n",
        ical(-3600),
        ical(6)
    ));
    daemon.apply_ok(&format!("{base}{freeze}")).await;
    daemon
        .apply_ok(&manifests::freight(
            "shop",
            "v1",
            "images:\n- {repoURL: registry.example/web, tag: \"1.0.0\", digest: \"sha256:1\"}",
        ))
        .await;

    // By hand: refused, with the window's name and its end.
    let out = daemon.promote("shop", "test", "v1");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(
            "is closed to promotions: promotion window \"freeze\" (Deny) is active until"
        ),
        "{}",
        out.stderr
    );
    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    assert_eq!(
        promotions["items"],
        Value::Array(Vec::new()),
        "nothing was created"
    );

    // Auto-promotion waits for the end of the window, then promotes without being asked.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stage = daemon.get_json("/v1/projects/shop/stages/test").await;
        let holds = stage["status"]["freightHistory"][0]["items"]
            .as_object()
            .is_some_and(|items| items.values().any(|i| i["alias"] == "v1"));
        if holds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v1 never reached test: {stage:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
