//! The template engine and its Sprig functions against the real `helm template` (v3.6.2, the
//! oracle tests/run.sh installs): each case is rendered by both, with the same values, and must
//! give the same text; each error case must fail with the same message.
//!
//! Where helm 3.6.2 (Go 1.16, Sprig 3.2) and today's Go differ, the case is not here but in
//! `semantics.rs` (`break`, `else with`, range over an int, `and`/`or` short-circuits).

use std::path::Path;

#[path = "../../tests/src/helm_tool.rs"]
#[allow(dead_code)]
mod helm_tool;

use gotmpl::{MissingKey, Templates, Value};

const VALUES: &str = r#"{
  "name": "shop", "replicas": 3, "big": 1000000, "ratio": 0.25, "on": true, "empty": "",
  "none": null, "items": ["b", "a", "c"], "labels": {"tier": "web", "app": "shop"},
  "port": "8080", "nested": {"a": {"b": "deep"}}
}"#;

/// Cases rendered with the values as dot (`include "case" .Values` in the chart).
const CASES: &[&str] = &[
    // text/template
    "{{ .name }} {{ .replicas }} {{ .big }} {{ .ratio }} {{ .items }} {{ .labels }}",
    "{{ .none }}|{{ .missing }}|{{ index .labels \"nope\" }}",
    "{{ len .items }} {{ index .labels \"tier\" }} {{ index .items 1 }}",
    "{{ printf \"%05.1f|%x|%q|%v|%5s|%-4d|\" .ratio 255 \"a\\\"b\" .items \"ab\" 7 }}",
    "{{ printf \"%d %s\" .replicas 3 }}",
    "{{ print 1 2 \"x\" 3 \"y\" }}|{{ println \"a\" 1 }}",
    "{{ range $k, $v := .labels }}{{ $k }}={{ $v }};{{ end }}{{ range .items }}[{{ . }}]{{ end }}",
    "{{ if and .on .name }}y{{ end }}{{ if or .empty .none }}n{{ else }}e{{ end }}",
    "{{ slice .items 1 }} {{ slice .items 1 2 }} {{ html \"<x a='1'>\" }} {{ js \"a'b<\" }} {{ urlquery \"a b&c\" }}",
    "{{ eq .name \"shop\" }} {{ ne .name \"x\" }} {{ lt 1 2 }} {{ ge \"b\" \"a\" }} {{ eq .replicas 3.0 }}",
    "{{ with .nested.a }}{{ .b }}{{ end }} {{ $x := .name }}{{ $x }}",
    "a  {{- .name -}}  b {{- /* c */ -}} c",
    // Sprig: strings
    "{{ quote .replicas }} {{ quote .name .none 1 }} {{ squote .name }} {{ cat \"a\" .none \"b\" 1 }}",
    "{{ upper \"abc\" }} {{ lower \"ABC\" }} {{ title \"hello world-x\" }} {{ untitle \"Hello World\" }}",
    "{{ trim \"  x  \" }}|{{ trimAll \"$\" \"$$x$\" }}|{{ trimPrefix \"a\" \"abc\" }}|{{ trimSuffix \"c\" \"abc\" }}",
    "{{ repeat 3 \"ab\" }} {{ substr 1 3 \"hello\" }} {{ trunc 3 \"hello\" }} {{ trunc -3 \"hello\" }} {{ abbrev 5 \"hello world\" }}",
    "{{ nospace \"a b c\" }} {{ initials \"hello world\" }} {{ contains \"ll\" \"hello\" }} {{ hasPrefix \"he\" \"hello\" }} {{ hasSuffix \"lo\" \"hello\" }}",
    "{{ replace \"a\" \"b\" \"aaa\" }} {{ plural \"one\" \"many\" 2 }} {{ plural \"one\" \"many\" 1 }}",
    "{{ snakecase \"FirstName\" }} {{ kebabcase \"FirstName\" }} {{ camelcase \"http_server\" }} {{ swapcase \"Hello\" }}",
    "{{ indent 2 \"a\\nb\" }}|{{ nindent 2 \"a\" }}",
    "{{ join \",\" .items }} {{ splitList \",\" \"a,b\" }} {{ split \"$\" \"a$b\" }} {{ splitn \"$\" 2 \"a$b$c\" }} {{ sortAlpha .items }}",
    "{{ toStrings (list 1 2) }} {{ toString .replicas }} {{ toString .none }} {{ typeOf (toString 1) }}",
    "{{ regexMatch \"^s.*p$\" .name }} {{ regexFindAll \"[a-c]\" \"abcd\" -1 }} {{ regexFind \"[0-9]+\" \"ab12c\" }}",
    "{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\" }} {{ regexReplaceAllLiteral \"a(x*)b\" \"-ab-\" \"${1}\" }} {{ regexSplit \"z+\" \"pizza\" -1 }}",
    // Sprig: lists
    "{{ list 1 \"a\" .ratio }} {{ first .items }} {{ rest .items }} {{ last .items }} {{ initial .items }}",
    "{{ append .items \"d\" }} {{ prepend .items \"z\" }} {{ concat .items (list 1) }} {{ reverse .items }}",
    "{{ uniq (list 1 1 2) }} {{ without .items \"a\" }} {{ has \"a\" .items }} {{ compact (list \"\" 1 .none \"x\") }}",
    "{{ until 3 }} {{ untilStep 0 10 3 }} {{ seq 5 }} {{ seq 2 -2 }} {{ chunk 2 .items }}",
    // Sprig: dicts
    "{{ dict \"a\" 1 \"b\" \"x\" }} {{ get .labels \"tier\" }} {{ hasKey .labels \"app\" }} {{ keys .labels | sortAlpha }}",
    "{{ pluck \"a\" (dict \"a\" 1) (dict \"a\" 2) }} {{ pick .labels \"tier\" }} {{ omit .labels \"tier\" }}",
    "{{ merge (dict \"a\" 1) (dict \"a\" 2 \"b\" 3) }} {{ mergeOverwrite (dict \"a\" 1) (dict \"a\" 2 \"b\" 3) }}",
    "{{ $d := dict \"x\" 1 }}{{ $_ := set $d \"y\" 2 }}{{ $d }} {{ $_ := unset $d \"x\" }}{{ $d }}",
    "{{ dig \"a\" \"b\" \"none\" .nested }} {{ dig \"a\" \"z\" \"none\" .nested }}",
    // Sprig: numbers
    "{{ add 1 2.5 \"3\" }} {{ sub 5 2 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ mod 7 3 }} {{ max 1 5 3 }} {{ min 4 2 }} {{ add1 .replicas }}",
    "{{ addf 1.5 2 }} {{ floor 1.7 }} {{ ceil 1.2 }} {{ round 3.14159 2 }} {{ int \"42\" }} {{ int64 3.9 }} {{ float64 \"1.5\" }} {{ atoi \"12\" }}",
    // Sprig: defaults and types
    "{{ default \"x\" .none }} {{ default \"x\" .name }} {{ default 3 0 }} {{ empty .empty }} {{ empty .items }}",
    "{{ coalesce .none \"\" \"z\" }} {{ all 1 \"a\" }} {{ any 0 \"\" \"x\" }} {{ ternary \"a\" \"b\" true }}",
    "{{ b64enc \"hello\" }} {{ b64dec \"aGVsbG8=\" }} {{ sha256sum \"hello\" }} {{ sha1sum \"hello\" }}",
    "{{ b32enc \"hello\" }} {{ b32enc \"hi!\" }} {{ b32dec \"NBSWY3DP\" }} {{ b32dec \"NBUSC===\" }} {{ b32dec \"bad\" }} {{ adler32sum \"hello\" }} {{ len uuidv4 }}",
    "{{ typeOf .replicas }} {{ typeOf .items }} {{ kindOf .labels }} {{ kindIs \"map\" .labels }} {{ typeIs \"string\" .name }} {{ deepEqual (list 1) (list 1) }}",
    "{{ base \"/a/b.txt\" }} {{ dir \"/a/b.txt\" }} {{ ext \"b.tar.gz\" }} {{ clean \"/a/../b/./c\" }} {{ isAbs \"/a\" }} {{ toDecimal \"0777\" }}",
    // Sprig: dates (fixed instants; the machine's zone is UTC, as the sandbox's), paths, URLs, wrapping
    "{{ date \"2006-01-02 15:04:05 Mon Jan MST\" 1700000000 }} {{ htmlDate 86400 }} {{ dateInZone \"Jan _2 3:04PM\" 1700000000 \"UTC\" }} {{ htmlDateInZone 0 \"UTC\" }}",
    "{{ toDate \"2006-01-02\" \"2021-12-31\" | date \"Monday 02/01/06\" }} {{ toDate \"2006-01-02T15:04:05Z07:00\" \"2021-03-05T07:30:00+02:00\" | unixEpoch }} {{ toDate \"2006-01-02\" \"bad\" | unixEpoch }}",
    "{{ toDate \"2006-01-02\" \"2021-12-31\" | dateModify \"-1.5h\" | date \"2006-01-02T15:04\" }} {{ toDate \"2006-01-02\" \"2021-12-31\" | dateModify \"nonsense\" | date \"2006\" }} {{ (toDate \"2006-01-02\" \"2020-02-29\").Year }}",
    "{{ duration \"90\" }} {{ duration \"3723\" }} {{ duration 90 }} {{ durationRound \"2h10m\" }} {{ durationRound \"400h\" }} {{ durationRound \"10000h\" }} {{ durationRound \"3s\" }}",
    "{{ osBase \"/a/b/\" }} {{ osDir \"a/b/c\" }} {{ osClean \"a//b/../../..\" }} {{ osExt \"x.tar.gz\" }} {{ osIsAbs \"a\" }} {{ osBase \"\" }} {{ osDir \"/\" }}",
    "{{ $u := urlParse \"https://bob:s%40cret@Example.com:8443/a%20b/c?x=1&y=2#top\" }}{{ $u.scheme }}|{{ $u.host }}|{{ $u.hostname }}|{{ $u.path }}|{{ $u.query }}|{{ $u.fragment }}|{{ $u.userinfo }}|{{ urlJoin $u }}",
    "{{ urlJoin (dict \"scheme\" \"http\" \"host\" \"h:80\" \"path\" \"/x y\" \"query\" \"a=b\") }} {{ urlJoin (dict \"path\" \"a:b\") }} {{ (urlParse \"mailto:ops@example.com\").opaque }}",
    "{{ wrap 10 \"The quick brown fox jumps over the lazy dog\" }}|{{ wrapWith 5 \"\\t\" \"Hello World extraordinarily\" }}|{{ wrap 4 \"abcdefghij k\" }}",
];

/// Cases that fail: each must fail in both with the same message (after the location).
const ERRORS: &[&str] = &[
    "{{ eq .replicas 3 }}",
    "{{ .missing.deeper }}",
    "{{ index .items 5 }}",
    "{{ indent .replicas \"x\" }}",
    "{{ fail \"boom\" }}",
    "{{ lt .none 1 }}",
    "{{ .items 1 }}",
    "{{ len 3 }}",
    // Sprig's `slice` replaces Go's and takes lists only.
    "{{ slice \"abcdef\" 1 3 }}",
];

/// `.Values` as Helm has them: JSON numbers are float64.
fn values() -> Value {
    fn convert(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().expect("a number")),
            serde_json::Value::String(s) => Value::from(s.as_str()),
            serde_json::Value::Array(a) => Value::list(a.iter().map(convert)),
            serde_json::Value::Object(o) => {
                Value::map(o.iter().map(|(k, v)| (k.clone(), convert(v))))
            }
        }
    }
    convert(&serde_json::from_str(VALUES).expect("json"))
}

/// Writes a chart whose template is `body`.
fn chart(dir: &Path, body: &str) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: oracle\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(dir.join("values.yaml"), VALUES).expect("write");
    std::fs::write(dir.join("templates/out.yaml"), body).expect("write");
}

fn run_helm(dir: &Path) -> Result<String, String> {
    helm_tool::try_run(&["template", "r", &dir.display().to_string()], dir, &[])
}

fn engine() -> Templates {
    let mut set = Templates::new();
    set.missing_key(MissingKey::Zero);
    gotmpl::sprig::install(&mut set);
    set
}

#[test]
fn cases_render_as_helm_renders_them() {
    let dir = tempfile::tempdir().expect("a dir");
    // Each case is a named template; the chart prints each one base64-encoded, so any text
    // (newlines, `<no value>`) survives the trip through a YAML document.
    let mut defines = String::new();
    let mut body = String::new();
    for (i, case) in CASES.iter().enumerate() {
        defines.push_str(&format!(
            "{{{{- define \"c{i}\" -}}}}{case}{{{{- end -}}}}\n"
        ));
        body.push_str(&format!(
            "c{i}: {{{{ include \"c{i}\" .Values | b64enc | quote }}}}\n"
        ));
    }
    chart(dir.path(), &body);
    std::fs::write(dir.path().join("templates/_cases.tpl"), defines).expect("write");
    let rendered = run_helm(dir.path()).unwrap_or_else(|e| panic!("helm failed: {e}"));

    let data = values();
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let line = rendered
            .lines()
            .find_map(|l| l.strip_prefix(&format!("c{i}: ")))
            .unwrap_or_else(|| panic!("case {i} missing in helm's output:\n{rendered}"));
        use base64::Engine as _;
        let expected = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(line.trim().trim_matches('"'))
                .expect("base64"),
        )
        .expect("utf-8");
        let mut set = engine();
        set.parse("case", case)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        match set.execute("case", &data) {
            Ok(actual) if actual == expected => {}
            Ok(actual) => {
                failures.push(format!("{case}\n  helm: {expected:?}\n  dray: {actual:?}"))
            }
            Err(e) => failures.push(format!("{case}\n  helm: {expected:?}\n  dray failed: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_read_as_helms() {
    let data = values();
    let mut failures = Vec::new();
    for case in ERRORS {
        let dir = tempfile::tempdir().expect("a dir");
        chart(
            dir.path(),
            &format!("{{{{ with .Values }}}}{case}{{{{ end }}}}"),
        );
        let helm_error = run_helm(dir.path()).expect_err(case);
        // helm: `Error: template: oracle/templates/out.yaml:1:3: executing "…" at <…>: MESSAGE`
        let helm_message = helm_error
            .lines()
            .next()
            .and_then(|l| l.rsplit_once(">: ").map(|(_, m)| m.to_string()))
            .unwrap_or_else(|| helm_error.clone());
        let mut set = engine();
        set.parse("case", case).expect("parses");
        let ours = set.execute("case", &data).expect_err(case).to_string();
        let our_message = ours
            .rsplit_once(">: ")
            .map(|(_, m)| m.to_string())
            .unwrap_or(ours.clone());
        if our_message != helm_message {
            failures.push(format!("{case}\n  helm: {helm_error}\n  dray: {ours}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} errors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
