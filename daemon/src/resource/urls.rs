//! Kargo's URL normalization: two spellings of one repository compare equal (`NormalizeGit`,
//! `NormalizeImage`, `NormalizeChart`). Webhook payloads and subscriptions meet here, so it takes
//! any string and never fails: what it does not recognize comes back unchanged. Depends on
//! nothing but `std` (the webhook fuzz target includes it by path).

/// Kargo's `SanitizeURL`: trim, and drop non-printable characters anywhere.
fn sanitize(url: &str) -> String {
    url.chars()
        .filter(|c| !c.is_control() && *c != '\u{feff}')
        .collect::<String>()
        .trim()
        .to_string()
}

fn trim_repo_path(path: &str) -> &str {
    let path = path.strip_suffix('/').unwrap_or(path);
    path.strip_suffix(".git").unwrap_or(path)
}

/// Kargo's `NormalizeGit`: lower-case; for http(s) drop credentials, a trailing `/` then `.git`;
/// `ssh://` keeps its user; SCP-style `user@host:path` becomes `ssh://user@host/path`. A URL with
/// a query, or anything unrecognized, is returned unchanged.
pub fn normalize_git(repo: &str) -> String {
    let lower = sanitize(&repo.to_lowercase());
    let hierarchical = ["http://", "https://", "ssh://", "git://", "file://"];
    if let Some(scheme) = hierarchical.iter().find(|s| lower.starts_with(**s)) {
        let rest = &lower[scheme.len()..];
        if rest.contains('?') || rest.contains(' ') {
            return repo.to_string();
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let authority = match *scheme {
            "http://" | "https://" => authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
            _ => authority,
        };
        return format!("{scheme}{authority}{}", trim_repo_path(path));
    }
    // SCP-style: [user@]host[:path]
    let (user_host, path) = lower.split_once(':').unwrap_or((lower.as_str(), ""));
    let (user, host) = user_host
        .split_once('@')
        .map_or((None, user_host), |(u, h)| (Some(u), h));
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    if user.is_some_and(|u| !word(u))
        || !host.split('.').all(word)
        || path.contains(' ')
        || path.contains('?')
    {
        return repo.to_string();
    }
    let path = trim_repo_path(path);
    if path.is_empty() {
        format!("ssh://{user_host}")
    } else {
        format!("ssh://{user_host}/{path}")
    }
}

/// Kargo's `NormalizeImage`: Docker Hub forms collapse (`docker.io/`, `index.docker.io/`,
/// `registry-1.docker.io/` and `library/` are dropped); a tag or digest is dropped; anything that
/// does not parse as an image reference is returned unchanged.
pub fn normalize_image(repo_url: &str) -> String {
    let lower = sanitize(&repo_url.to_lowercase());
    let without_digest = lower.split_once('@').map_or(lower.as_str(), |(r, _)| r);
    let without_tag = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    let valid = !without_tag.is_empty()
        && without_tag.split('/').enumerate().all(|(i, part)| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || "._-".contains(c)
                        || (i == 0 && c == ':')
                })
        });
    if !valid {
        return repo_url.to_string();
    }
    let (registry, path) = match without_tag.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("index.docker.io", without_tag),
    };
    if path.split('/').next().is_some_and(|p| p.contains(':')) {
        return repo_url.to_string();
    }
    match registry {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            path.strip_prefix("library/").unwrap_or(path).to_string()
        }
        _ => format!("{registry}/{path}"),
    }
}

/// Kargo's `NormalizeChart`: sanitize, lower-case, strip `oci://`, then image normalization.
pub fn normalize_chart(repo: &str) -> String {
    let lower = sanitize(repo).to_lowercase();
    let stripped = lower.strip_prefix("oci://").unwrap_or(&lower);
    normalize_image(stripped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_git_urls_like_kargo() {
        let cases = [
            (
                "https://github.com/example/repo.git/",
                "https://github.com/example/repo",
            ),
            (
                "https://foo:bar@localhost:8443/example/repo.git",
                "https://localhost:8443/example/repo",
            ),
            (
                "HTTPS://GitHub.com/Example/Repo",
                "https://github.com/example/repo",
            ),
            (
                "ssh://git@github.com/example/repo.git/",
                "ssh://git@github.com/example/repo",
            ),
            (
                "git@github.com:example/repo.git",
                "ssh://git@github.com/example/repo",
            ),
            ("github.com:example/repo/", "ssh://github.com/example/repo"),
            ("git.example.com", "ssh://git.example.com"),
            (
                "http://github.com/example/repo?foo=bar",
                "http://github.com/example/repo?foo=bar",
            ),
            ("not even remotely a url", "not even remotely a url"),
            ("https://github.com/", "https://github.com"),
            ("file:///tmp/gitops.git", "file:///tmp/gitops"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_git(input), expected, "{input}");
        }
    }

    #[test]
    fn normalizes_chart_urls_like_kargo() {
        let cases = [
            ("", ""),
            ("  oci://repo  ", "repo"),
            ("OCI://Repo", "repo"),
            ("oci://docker.io/example/repo", "example/repo"),
            ("index.docker.io/example/repo", "example/repo"),
            ("registry-1.docker.io/library/repo", "repo"),
            (
                "oci://ghcr.io/example/charts/app",
                "ghcr.io/example/charts/app",
            ),
            (
                "oci://localhost:5000/charts/app",
                "localhost:5000/charts/app",
            ),
            ("https://charts.example.com", "https://charts.example.com"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_chart(input), expected, "{input:?}");
        }
    }
}
