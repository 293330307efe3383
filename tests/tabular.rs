//! The tabular evaluator: the bundled NAS-Bench-201 table loads with its published sanity
//! figures; equivalent spellings of one architecture are one key; a look-up of an
//! architecture the table lacks is an error naming it; every bad input (missing column,
//! duplicate architecture, non-number, NaN, unparseable arch, short row, open quote) is
//! refused naming the file, the line and the column; size limits no row meets are refused.

#[path = "common/toy_space.rs"]
mod toy_space;

use nasrs::nas::multi_trial::table::{split_fields, Table, Wanted};
use nasrs::nas::multi_trial::{default_table, TableEvaluator, TableSpec};
use nasrs::nas::space::nb201::{Nb201Arch, Nb201Space};
use nasrs::nas::space::SearchSpace;
use std::path::{Path, PathBuf};
use toy_space::ToySpace;

fn bundled() -> PathBuf {
    default_table("nb201").expect("nb201 has a bundled table")
}

fn spec(path: &Path) -> TableSpec {
    TableSpec {
        path: path.to_path_buf(),
        metric: "cifar10_valid_acc".into(),
        report: "cifar10_test_acc".into(),
        params_max_m: None,
        flops_max_m: None,
        penalty: None,
    }
}

const W: &[Wanted] = &[
    Wanted {
        column: "acc",
        asked_by: "--metric",
    },
    Wanted {
        column: "test",
        asked_by: "--report",
    },
];

fn parse(text: &str) -> nasrs::Result<Table<Vec<usize>>> {
    Table::parse(&ToySpace::new(&[3, 3]), Path::new("toy.csv"), text, W)
}

/// The error of parsing `text`, which must name the file and each of `parts`.
fn refused(text: &str, parts: &[&str]) {
    let e = parse(text).expect_err("bad table accepted").to_string();
    assert!(e.contains("toy.csv"), "{e}");
    for p in parts {
        assert!(e.contains(p), "'{p}' missing from: {e}");
    }
}

#[test]
fn the_bundled_table_loads_with_its_sanity_figures() {
    let eval = TableEvaluator::open(Nb201Space, spec(&bundled())).expect("bundled table");
    assert_eq!(eval.table.len(), 15_625);
    let best_test = eval
        .table
        .archs()
        .iter()
        .map(|a| eval.report(a).expect("in the table"))
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best_test, 89.16);
    // Row 2 of the file (README's example), queried by its string.
    let a = Nb201Space
        .parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
        .expect("parse");
    assert_eq!(eval.metric(&a).expect("metric"), 82.834);
    assert_eq!(eval.report(&a).expect("report"), 88.22);
}

#[test]
fn equivalent_spellings_are_one_architecture() {
    // NB201 edges may be listed in any order within a node.
    let canonical =
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|";
    let shuffled =
        "|nor_conv_3x3~0|+|skip_connect~1|none~0|+|none~2|avg_pool_3x3~0|nor_conv_1x1~1|";
    let w = [Wanted {
        column: "acc",
        asked_by: "--metric",
    }];
    let t = Table::parse(
        &Nb201Space,
        Path::new("t.csv"),
        &format!("arch,acc\n{shuffled},71.5\n"),
        &w,
    )
    .expect("table");
    let a = Nb201Arch::parse(canonical).expect("parse");
    assert_eq!(t.value(&Nb201Space, &a, 0).expect("found"), 71.5);
    let e = Table::parse(
        &Nb201Space,
        Path::new("t.csv"),
        &format!("arch,acc\n{canonical},1\n{shuffled},2\n"),
        &w,
    )
    .expect_err("duplicate accepted")
    .to_string();
    assert!(
        e.contains("t.csv") && e.contains("line 3") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn a_missing_architecture_is_an_error_naming_it() {
    let t = parse("arch,acc,test\n0-0,1,2\n1-2,3,4\n").expect("table");
    assert_eq!(
        t.value(&ToySpace::new(&[3, 3]), &vec![1, 2], 1)
            .expect("found"),
        4.0
    );
    let e = t
        .value(&ToySpace::new(&[3, 3]), &vec![2, 2], 0)
        .expect_err("missing arch answered")
        .to_string();
    assert!(
        e.contains("'2-2'") && e.contains("toy.csv") && e.contains("not in the table"),
        "{e}"
    );
}

#[test]
fn only_the_asked_columns_are_read_and_columns_may_come_in_any_order() {
    let t = parse("test,notes,arch,acc\n2,anything at all,0-1,1\n").expect("table");
    assert_eq!(t.columns(), ["acc", "test"]);
    assert_eq!(t.row(&vec![0, 1]), Some(&[1.0, 2.0][..]));
    // CRLF line ends, a byte-order mark and blank lines are tolerated.
    let t = parse("\u{feff}arch,acc,test\r\n\r\n0-1,1,2\r\n").expect("CRLF table");
    assert_eq!(t.len(), 1);
}

#[test]
fn bad_tables_are_refused_naming_file_line_and_column() {
    refused("", &["empty file"]);
    refused(
        "arch,acc\n0-0,1\n",
        &["line 1", "no column 'test'", "--report", "arch, acc"],
    );
    refused("name,acc,test\n0-0,1,2\n", &["line 1", "no column 'arch'"]);
    refused(
        "arch,acc,acc,test\n0-0,1,1,2\n",
        &["line 1", "'acc' appears 2 times"],
    );
    refused(
        "arch,acc,test\n0-0,1,2\n0-1,x,2\n",
        &["line 3", "column 'acc'", "'x' is not a number"],
    );
    refused(
        "arch,acc,test\n0-1,1,NaN\n",
        &["line 2", "column 'test'", "not a finite number"],
    );
    refused(
        "arch,acc,test\n0-1,1,inf\n",
        &["line 2", "column 'test'", "not a finite number"],
    );
    refused(
        "arch,acc,test\n0-1,1,\n",
        &["line 2", "column 'test'", "'' is not a number"],
    );
    refused(
        "arch,acc,test\n0-9,1,2\n",
        &["line 2", "column 'arch'", "decision 1"],
    );
    refused(
        "arch,acc,test\nzero,1,2\n",
        &["line 2", "column 'arch'", "'zero'"],
    );
    refused(
        "arch,acc,test\n0-0,1,2\n0-1,1\n",
        &["line 3", "2 fields where the header has 3"],
    );
    refused(
        "arch,acc,test\n0-0,1,2\n00- 0,1,2\n",
        &["line 3", "already on line 2", "'0-0'"],
    );
    refused("arch,acc,test\n\"0-0,1,2\n", &["line 2", "never closes"]);
    refused("arch,acc,test\n", &["no rows"]);
}

#[test]
fn quoted_fields_may_hold_commas_and_quotes() {
    assert_eq!(
        split_fields(r#"a,"b, c","say ""hi""", d "#).expect("fields"),
        ["a", "b, c", r#"say "hi""#, " d "]
    );
    assert!(split_fields(r#""a"b,c"#).is_err());
    let t = parse("arch,acc,test\n\"1-2\",\"5\",6\n").expect("quoted table");
    assert_eq!(t.row(&vec![1, 2]), Some(&[5.0, 6.0][..]));
}

#[test]
fn unreadable_files_and_columns_are_named() {
    let missing = Path::new("/nonexistent/nasrs-table.csv");
    let e = TableEvaluator::open(Nb201Space, spec(missing))
        .err()
        .expect("missing file opened")
        .to_string();
    assert!(e.contains("/nonexistent/nasrs-table.csv"), "{e}");
    let mut s = spec(&bundled());
    s.metric = "cifar10_valid_accuracy".into();
    let e = TableEvaluator::open(Nb201Space, s)
        .err()
        .expect("missing column accepted")
        .to_string();
    assert!(
        e.contains("--metric")
            && e.contains("cifar10_valid_accuracy")
            && e.contains("cifar10_valid_acc,"),
        "{e}"
    );
}

#[test]
fn size_limits_filter_and_are_refused_when_nothing_fits() {
    let mut s = spec(&bundled());
    s.params_max_m = Some(0.3);
    s.flops_max_m = Some(40.0);
    let eval = TableEvaluator::open(Nb201Space, s.clone()).expect("limits");
    let feasible = eval.feasible().count();
    assert!(feasible > 100 && feasible < 15_625, "{feasible}");
    let text = std::fs::read_to_string(bundled()).expect("table");
    let expected = text
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f[7].parse::<f64>().unwrap() <= 0.3 && f[8].parse::<f64>().unwrap() <= 40.0
        })
        .count();
    assert_eq!(feasible, expected);
    s.params_max_m = Some(0.001);
    let e = TableEvaluator::open(Nb201Space, s.clone())
        .err()
        .expect("impossible limit accepted")
        .to_string();
    assert!(
        e.contains("--params-max-m") && e.contains("smallest"),
        "{e}"
    );
    s.params_max_m = Some(-1.0);
    let e = TableEvaluator::open(Nb201Space, s)
        .err()
        .expect("negative limit")
        .to_string();
    assert!(e.contains("--params-max-m"), "{e}");
}
