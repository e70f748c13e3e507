//! What a webhook receiver reads from anyone who knows its URL: the input's first line is the
//! receiver type, then `Name: value` header lines up to a blank line, then the body. The body is
//! parsed as the receiver parses it, a push, a pull request event and pushed images are read out
//! of it, and every URL found is normalized as subscriptions are. Errors are fine; a panic, a
//! hang or an output larger than the input allows is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../daemon/src/api/webhooks/payload.rs"]
#[allow(dead_code)]
mod payload;
#[path = "../../daemon/src/resource/urls.rs"]
#[allow(dead_code)]
mod urls;

/// `super::MAX_BODY` in the daemon, which payload.rs names in its documentation only.
#[allow(dead_code)]
const MAX_BODY: usize = 2 << 20;

const KINDS: &[&str] = &[
    "github",
    "gitea",
    "gitlab",
    "bitbucket",
    "dockerhub",
    "quay",
    "harbor",
    "artifactory",
    "azure",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((kind, rest)) = text.split_once('\n') else {
        return;
    };
    let (head, body) = rest.split_once("\n\n").unwrap_or(("", rest));
    let mut headers = http::HeaderMap::new();
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(body) else {
        return;
    };
    // Every receiver type, not only the one named: any body may reach any receiver.
    let kinds = std::iter::once(kind).chain(KINDS.iter().copied());
    for kind in kinds {
        let _ = payload::pull_request_event(kind, &headers, &body);
        if let Some(push) = payload::push(kind, &headers, &body) {
            // Bitbucket adds `.git` and `refs/heads/` to what the body says; nothing else grows.
            let grown = push.urls.iter().map(String::len).sum::<usize>()
                + push.git_ref.len()
                + push.paths.iter().map(String::len).sum::<usize>();
            assert!(grown <= 3 * data.len() + 64, "a push larger than its body");
            for url in &push.urls {
                let _ = urls::normalize_git(url);
            }
        }
        for virtual_repo in [None, Some("virtual")] {
            if let Some(images) = payload::image_push(kind, &body, virtual_repo) {
                for image in &images {
                    let _ = urls::normalize_image(image);
                    let _ = urls::normalize_chart(image);
                }
            }
        }
    }
});
