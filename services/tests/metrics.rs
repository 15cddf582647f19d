//! A node's metrics in the OpenMetrics text format: every line well formed, the figures of its
//! status and the histograms of its lookups and dictionary operations present with the counts
//! made, and nothing recorded when metrics are off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{network, settle};
use std::collections::BTreeMap;

/// The samples of an OpenMetrics text: series (name and labels as written) to value. Checks
/// that every line is a comment or a sample and that the text ends with `# EOF`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name in {line:?}"
        );
        assert!(series[..name_end].starts_with("p2ps_"), "{line:?}");
        let v: f64 = value.parse().expect("a number");
        out.insert(series.to_string(), v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_status_figures_and_operation_histograms() {
    let nodes = network(5).await;
    settle(&nodes).await;
    let n = &nodes[1];
    for i in 0..7 {
        n.lookup_key(format!("k{i}")).await.unwrap();
    }
    n.dict().put("colour", "blue").await.unwrap();
    n.dict().get("colour").await.unwrap();
    n.dict().get("colour").await.unwrap();

    let text = n.metrics_text().await.unwrap();
    let s = samples(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("{k} in:\n{text}"));
    assert_eq!(get("p2ps_up"), 1.0);
    assert_eq!(get("p2ps_lookup_seconds_count{result=\"ok\"}"), 7.0);
    assert_eq!(get("p2ps_lookup_hops_count"), 7.0);
    assert_eq!(
        get("p2ps_lookup_seconds_bucket{le=\"+Inf\",result=\"ok\"}"),
        7.0
    );
    assert_eq!(
        get("p2ps_dict_operation_seconds_count{op=\"read\",result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        get("p2ps_dict_operation_seconds_count{op=\"write\",result=\"ok\"}"),
        1.0
    );
    let status = n.status().await.unwrap();
    assert!(get("p2ps_lookups_total{result=\"ok\"}") >= 7.0);
    assert_eq!(
        get("p2ps_table_entries{part=\"successors\"}"),
        status.successors.len() as f64
    );
    let conns =
        get("p2ps_connections{path=\"direct\"}") + get("p2ps_connections{path=\"relayed\"}");
    assert!(conns >= 1.0);
    assert_eq!(get("p2ps_connection_rtt_seconds_count"), conns);
    for k in [
        "p2ps_dict_keys",
        "p2ps_dict_under_replicated",
        "p2ps_refused_total{reason=\"forged\"}",
    ] {
        get(k);
    }
    // Every service's counters, by name.
    assert!(
        s.keys()
            .any(|k| k.starts_with("p2ps_service{") && k.contains("service=\"p2ps/dict\"")),
        "{text}"
    );

    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_metrics_off_records_no_histograms() {
    let nodes = common::network_with(3, |c| c.metrics = false).await;
    settle(&nodes).await;
    nodes[0].lookup_key("x").await.unwrap();
    assert!(!nodes[0].metrics().enabled());
    let s = samples(&nodes[0].metrics_text().await.unwrap());
    assert!(!s.keys().any(|k| k.starts_with("p2ps_lookup_seconds")));
    // The status figures are there all the same.
    assert!(s
        .get("p2ps_lookups_total{result=\"ok\"}")
        .is_some_and(|v| *v >= 1.0));
    for n in &nodes {
        n.shutdown().await;
    }
}
