//! Go's `text/template` semantics, case by case. Each expectation is what Go's `text/template`
//! produces for the same template and data (its documented behaviour, and fmt's for printing).
//! The printing, comparison, missing-key and error-position cases were checked against the real
//! `helm template` 3.6.2 (Go 1.16) by hand; `break`/`continue`, `else with`, range over an int and
//! the short-circuit of `and`/`or` are newer than Go 1.16 and follow today's documentation.

use gotmpl::{MissingKey, Templates, Value};

fn data() -> Value {
    Value::map([
        ("name".to_string(), Value::from("shop")),
        ("replicas".to_string(), Value::Float(3.0)),
        ("big".to_string(), Value::Float(1_000_000.0)),
        ("count".to_string(), Value::Int(2)),
        ("on".to_string(), Value::Bool(true)),
        ("empty".to_string(), Value::from("")),
        ("none".to_string(), Value::Nil),
        (
            "items".to_string(),
            Value::list(["a".into(), "b".into(), "c".into()]),
        ),
        (
            "labels".to_string(),
            Value::map([
                ("tier".to_string(), Value::from("web")),
                ("app".to_string(), Value::from("shop")),
            ]),
        ),
    ])
}

fn render_with(text: &str, missing: MissingKey) -> Result<String, String> {
    let mut set = Templates::new();
    set.missing_key(missing);
    set.parse("t", text).map_err(|e| e.to_string())?;
    set.execute("t", &data()).map_err(|e| e.to_string())
}

fn render(text: &str) -> String {
    render_with(text, MissingKey::Zero).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn fails(text: &str) -> String {
    render_with(text, MissingKey::Zero).expect_err(text)
}

#[test]
fn printing() {
    assert_eq!(render("{{.name}}"), "shop");
    assert_eq!(render("{{.replicas}}"), "3");
    assert_eq!(render("{{.big}}"), "1e+06");
    assert_eq!(render("{{.items}}"), "[a b c]");
    assert_eq!(render("{{.labels}}"), "map[app:shop tier:web]");
    assert_eq!(render("{{.none}}"), "<no value>");
    assert_eq!(render("{{.missing}}"), "<no value>");
    assert_eq!(
        render("{{1.5}} {{0x10}} {{'a'}} {{true}} {{\"q\"}}"),
        "1.5 16 97 true q"
    );
}

#[test]
fn whitespace_trimming() {
    assert_eq!(render("a\n  {{- .name }}  \nb"), "ashop  \nb");
    assert_eq!(render("a  {{ .name -}}\n\n  b"), "a  shopb");
    assert_eq!(render("{{- /* a comment */ -}}\n x"), "x");
}

#[test]
fn conditionals_and_truth() {
    assert_eq!(render("{{if .on}}yes{{else}}no{{end}}"), "yes");
    assert_eq!(render("{{if .empty}}yes{{else}}no{{end}}"), "no");
    assert_eq!(
        render("{{if .missing}}yes{{else if .count}}two{{else}}no{{end}}"),
        "two"
    );
    assert_eq!(render("{{with .labels}}{{.tier}}{{end}}"), "web");
    assert_eq!(render("{{with .missing}}x{{else}}none{{end}}"), "none");
    assert_eq!(
        render("{{with .missing}}x{{else with .name}}{{.}}{{end}}"),
        "shop"
    );
    assert_eq!(render("{{if and .on .empty}}x{{else}}y{{end}}"), "y");
    assert_eq!(render("{{or .empty .none .name}}"), "shop");
    assert_eq!(render("{{and .on .count}}"), "2");
    assert_eq!(render("{{not .empty}}"), "true");
}

#[test]
fn and_or_stop_at_the_deciding_argument() {
    // The second argument would fail if evaluated.
    assert_eq!(render("{{if or .on (index .items 99)}}ok{{end}}"), "ok");
    assert_eq!(
        render("{{if and .empty (index .items 99)}}{{else}}ok{{end}}"),
        "ok"
    );
}

#[test]
fn ranges() {
    assert_eq!(render("{{range .items}}[{{.}}]{{end}}"), "[a][b][c]");
    assert_eq!(
        render("{{range $i, $v := .items}}{{$i}}={{$v}} {{end}}"),
        "0=a 1=b 2=c "
    );
    assert_eq!(
        render("{{range $k, $v := .labels}}{{$k}}:{{$v}},{{end}}"),
        "app:shop,tier:web,"
    );
    assert_eq!(render("{{range .missing}}x{{else}}empty{{end}}"), "empty");
    assert_eq!(render("{{range $i := 3}}{{$i}}{{end}}"), "012");
    assert_eq!(
        render(
            "{{range .items}}{{if eq . \"b\"}}{{continue}}{{end}}{{if eq . \"c\"}}{{break}}{{end}}{{.}}{{end}}"
        ),
        "a"
    );
    // `$` is the data everywhere.
    assert_eq!(render("{{range .items}}{{$.name}}{{end}}"), "shopshopshop");
    assert!(fails("{{range .name}}{{end}}").contains("range can't iterate over shop"));
}

#[test]
fn variables() {
    assert_eq!(render("{{$x := .name}}{{$x}}"), "shop");
    assert_eq!(render("{{$x := 1}}{{if .on}}{{$x = 2}}{{end}}{{$x}}"), "2");
    assert_eq!(
        render("{{$x := 1}}{{range .items}}{{$x = .}}{{end}}{{$x}}"),
        "c"
    );
    assert_eq!(render("{{$n := len .items}}{{$n}}"), "3");
}

#[test]
fn templates_define_block() {
    let mut set = Templates::new();
    set.parse(
        "t",
        r#"{{define "greet"}}hi {{.}}{{end}}{{template "greet" .name}}|{{block "b" .count}}n={{.}}{{end}}"#,
    )
    .expect("parses");
    assert_eq!(set.execute("t", &data()).expect("runs"), "hi shop|n=2");
    // A later definition replaces the block's default.
    set.parse("u", r#"{{define "b"}}B{{end}}"#).expect("parses");
    assert_eq!(set.execute("t", &data()).expect("runs"), "hi shop|B");
    // A template that names an undefined one parses, and fails when it runs.
    let mut set = Templates::new();
    set.parse("x", r#"{{template "nope"}}"#).expect("parses");
    let e = set.execute("x", &Value::Nil).expect_err("fails");
    assert_eq!(
        e.to_string(),
        "template: x:1:11: executing \"x\" at <{{template \"nope\"}}>: template \"nope\" not defined"
    );
}

#[test]
fn comparisons_follow_go() {
    assert_eq!(render("{{eq .name \"shop\"}}"), "true");
    assert_eq!(render("{{eq .name \"a\" \"shop\"}}"), "true");
    assert_eq!(render("{{ne .count 3}}"), "true");
    assert_eq!(
        render("{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2.5}}"),
        "true true true false"
    );
    // A float64 from the values and an int constant do not compare in Go.
    let e = fails("{{if eq .replicas 3}}x{{end}}");
    assert_eq!(
        e,
        "template: t:1:5: executing \"t\" at <eq .replicas 3>: error calling eq: incompatible types for comparison"
    );
    // A nil compares unequal to anything, without an error.
    assert_eq!(render("{{eq .missing \"x\"}}"), "false");
    assert!(fails("{{lt .missing 1}}").contains("invalid type for comparison"));
}

#[test]
fn builtins() {
    assert_eq!(
        render("{{len .items}} {{len .name}} {{len .labels}}"),
        "3 4 2"
    );
    assert_eq!(
        render("{{index .items 1}} {{index .labels \"tier\"}}"),
        "b web"
    );
    assert_eq!(render("{{index .labels \"nope\"}}"), "<no value>");
    assert_eq!(render("{{slice .items 1}} {{slice .name 1 3}}"), "[b c] ho");
    assert_eq!(render("{{print \"a\" 1 2 \"b\"}}"), "a1 2b");
    assert_eq!(render("{{println 1 \"a\"}}"), "1 a\n");
    assert_eq!(render("{{printf \"%s=%d\" .name .count}}"), "shop=2");
    assert_eq!(render("{{printf \"%v\" .replicas}}"), "3");
    assert_eq!(
        render("{{html \"<a href='x'>\"}}"),
        "&lt;a href=&#39;x&#39;&gt;"
    );
    assert_eq!(render("{{urlquery \"a b&c\"}}"), "a+b%26c");
    assert_eq!(render("{{js \"it's <b>\"}}"), "it\\'s \\u003Cb\\u003E");
    assert!(fails("{{index .items 5}}").contains("error calling index: index out of range: 5"));
    assert!(fails("{{len 3}}").contains("len of type int"));
}

#[test]
fn pipelines_pass_the_value_as_the_last_argument() {
    assert_eq!(render("{{.name | printf \"%s!\"}}"), "shop!");
    assert_eq!(render("{{.items | len | printf \"%d items\"}}"), "3 items");
    assert_eq!(render("{{(index .items 0) | printf \"<%s>\"}}"), "<a>");
    assert_eq!(render("{{(.labels).tier}}"), "web");
}

#[test]
fn missing_keys_as_helm_sets_them() {
    // missingkey=zero: a missing map entry is a nil, and a field of a nil is an error.
    assert_eq!(
        fails("line one\n  {{ .missing.deeper }}"),
        "template: t:2:13: executing \"t\" at <.missing.deeper>: nil pointer evaluating interface {}.deeper"
    );
    // missingkey=default: no value, silently.
    assert_eq!(
        render_with("{{ .missing.deeper }}", MissingKey::Default).expect("renders"),
        "<no value>"
    );
    // missingkey=error.
    assert!(
        render_with("{{ .missing }}", MissingKey::Error)
            .expect_err("fails")
            .contains("map has no entry for key \"missing\"")
    );
}

#[test]
fn errors_name_file_line_and_column() {
    assert_eq!(
        fails("{{ nope 1 }}"),
        "template: t:1: function \"nope\" not defined"
    );
    assert!(fails("{{ .name.x }}").contains("can't evaluate field x in type string"));
    assert_eq!(
        fails("{{ .items 1 }}"),
        "template: t:1:3: executing \"t\" at <.items>: items is not a method but has arguments"
    );
    assert_eq!(
        fails("{{ index .items 5 }}"),
        "template: t:1:3: executing \"t\" at <index .items 5>: error calling index: index out of range: 5"
    );
    assert_eq!(fails("{{ if }}"), "template: t:1: missing value for if");
    assert_eq!(fails("a\n{{ end }}"), "template: t:2: unexpected {{end}}");
}

#[test]
fn hostile_templates_stop() {
    // Infinite recursion stops at the depth limit.
    let mut set = Templates::new();
    set.parse(
        "t",
        r#"{{define "loop"}}{{template "loop" .}}{{end}}{{template "loop" .}}"#,
    )
    .expect("parses");
    let e = set.execute("t", &Value::Nil).expect_err("stops");
    assert!(
        e.to_string().contains("exceeded maximum template depth"),
        "{e}"
    );
    // A huge range over an integer counts lazily: it stops at the first break, holding nothing.
    let mut set = Templates::new();
    set.parse(
        "t",
        "{{range $i := 4000000000000}}{{if eq $i 3}}{{break}}{{end}}{{$i}}{{end}}",
    )
    .expect("parses");
    assert_eq!(set.execute("t", &Value::Nil).expect("runs"), "012");
    // A huge indent is refused before it allocates (found by the chart_render fuzz target:
    // `nindent 2049638230412172400` asked for exabytes); a fair one still indents.
    let sprig = |text: &str| {
        let mut set = Templates::new();
        gotmpl::sprig::install(&mut set);
        set.parse("t", text).expect("parses");
        set.execute("t", &Value::Nil).map_err(|e| e.to_string())
    };
    for name in ["indent", "nindent"] {
        let e = sprig(&format!("{{{{ \"a\\nb\" | {name} 2049638230412172400 }}}}"))
            .expect_err("refused");
        assert!(
            e.contains(&format!("{name}: the result would pass 16 MiB")),
            "{e}"
        );
        let e = sprig(&format!(
            "{{{{ \"a\" | {name} 9000000 | {name} 9000000 }}}}"
        ))
        .expect_err("refused");
        assert!(e.contains("would pass 16 MiB"), "{e}");
    }
    assert_eq!(
        sprig(r#"{{ "a\nb" | nindent 2 }}"#).as_deref(),
        Ok("\n  a\n  b")
    );
    // Output past the limit stops.
    let mut set = Templates::new();
    set.max_output(1000);
    set.parse("t", "{{range 100000}}0123456789{{end}}")
        .expect("parses");
    let e = set.execute("t", &Value::Nil).expect_err("stops");
    assert!(
        e.to_string().contains("the output passed 1000 bytes"),
        "{e}"
    );
}

#[test]
fn a_step_budget_stops_a_loop_that_writes_nothing() {
    let mut set = Templates::new();
    set.max_steps(10_000);
    set.parse("t", "{{ range $i, $v := 4444444444 }}{{ end }}done")
        .expect("parses");
    let error = set
        .execute("t", &Value::Nil)
        .expect_err("stopped")
        .to_string();
    assert!(error.contains("more than 10000 steps"), "{error}");
    // Within the budget, the same loop runs to its end.
    set.parse("u", "{{ range 100 }}{{ end }}done")
        .expect("parses");
    assert_eq!(set.execute("u", &Value::Nil).expect("runs"), "done");
}
