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
