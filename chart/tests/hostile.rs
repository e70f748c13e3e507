//! Charts that try to exhaust the renderer: a map that holds itself, written with every
//! encoder, and values nested past any real chart's. Each fails or renders bounded text; none
//! overflows the stack or runs away.

use std::collections::BTreeMap;

use chart::{Chart, Options};

fn chart_with(template: &str, values: &str) -> Chart {
    let files: BTreeMap<String, Vec<u8>> = [
        (
            "Chart.yaml".to_string(),
            b"apiVersion: v2\nname: hostile\nversion: 0.1.0\n".to_vec(),
        ),
        ("values.yaml".to_string(), values.as_bytes().to_vec()),
        ("templates/t.yaml".to_string(), template.as_bytes().to_vec()),
    ]
    .into();
    Chart::from_files(files, "hostile").expect("the chart loads")
}

#[test]
fn a_map_holding_itself_is_written_bounded() {
    let chart = chart_with(
        "{{- $d := dict \"a\" 1 }}{{- $_ := set $d \"self\" $d }}\ntoml: {{ toToml $d | quote }}\njson: {{ toJson $d | len }}\nyaml: {{ toYaml $d | len }}\n",
        "{}",
    );
    let docs = chart::render(&chart, &Options::default()).expect("renders");
    let text = chart::print(&docs);
    assert!(
        text.contains("toml: \"toml: tables nest more than 200 deep\""),
        "{text}"
    );
    assert!(text.contains("json: ") && text.contains("yaml: "), "{text}");
}

#[test]
fn values_nested_past_reason_are_refused() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let files: BTreeMap<String, Vec<u8>> = [
        (
            "Chart.yaml".to_string(),
            b"apiVersion: v2\nname: hostile\nversion: 0.1.0\n".to_vec(),
        ),
        (
            "values.yaml".to_string(),
            format!("deep: {deep}\n").into_bytes(),
        ),
    ]
    .into();
    let e = Chart::from_files(files, "hostile").expect_err("refused");
    assert!(e.0.contains("values.yaml"), "{e}");
}

#[test]
fn a_printed_manifest_reads_back_and_a_broken_one_names_its_source() {
    let docs = [
        chart::Document {
            source: "web/templates/a.yaml".into(),
            content: "kind: A\nx: 1".into(),
            kind: "A".into(),
            hook: None,
        },
        chart::Document {
            source: "web/templates/b.yaml".into(),
            content: "kind: B".into(),
            kind: "B".into(),
            hook: None,
        },
    ];
    let back = chart::read_printed(&chart::print(&docs), false).expect("reads");
    let sources: Vec<&str> = back.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sources, ["web/templates/a.yaml", "web/templates/b.yaml"]);
    let gotmpl::Value::Map(first) = &back[0].1 else {
        panic!("a map: {:?}", back[0].1)
    };
    assert_eq!(first.keys(), ["kind", "x"]);
    assert_eq!(
        first.get("kind").as_ref().and_then(|k| k.as_str()),
        Some("A")
    );
    let broken = "---\n# Source: web/templates/c.yaml\nkind: [unclosed\n";
    let error = chart::read_printed(broken, false).expect_err("broken");
    assert!(error.starts_with("web/templates/c.yaml: "), "{error}");
}
