//! The settings table: every variable, its valid and invalid values, and
//! the one-line error an invalid value gives.

use super::*;

fn parse(pairs: &[(&str, &str)]) -> Result<Settings, Vec<SettingError>> {
    let (settings, errors) =
        Settings::from_lookup(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into()));
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

#[test]
fn defaults() {
    let s = parse(&[]).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.interval, Duration::ZERO);
}

#[test]
fn valid_values() {
    let s = parse(&[
        ("REFWATCH_INTERVAL", "0.25"),
        ("REFWATCH_SAMPLE", "100"),
        ("REFWATCH_OUTPUT", "/tmp/rw-%p.jsonl"),
        ("REFWATCH_FORMAT", "json"),
        ("REFWATCH_MODULES", "_fix*, other.so"),
        ("REFWATCH_CENSUS", "0"),
    ])
    .unwrap();
    assert_eq!(s.interval, Duration::from_millis(250));
    assert_eq!(s.sample, 100);
    assert_eq!(s.output.path_for(42), Some("/tmp/rw-42.jsonl".into()));
    assert!(s.output.per_process());
    assert_eq!(s.format, Format::Json);
    assert!(s.modules.watches("_fixture.so", true));
    assert!(!s.modules.watches("numpy.so", false));
    assert_eq!(s.census, Duration::ZERO);
}

#[test]
fn percent_escapes() {
    let out = output(OsStr::new("/x/%%p-%p")).unwrap();
    assert_eq!(out.path_for(7), Some("/x/%p-7".into()));
    assert!(out.per_process());
    assert!(!output(OsStr::new("/x/%%p")).unwrap().per_process());
}

/// The one setting named `env`.
fn setting(env: &str) -> &'static Setting {
    SETTINGS.iter().find(|s| s.env == env).unwrap_or_else(|| panic!("no setting {env}"))
}

/// Values each setting refuses.
const INVALID: &[(&str, &[&str])] = &[
    (
        "REFWATCH_INTERVAL",
        &[
            "",
            " ",
            "5s",
            "-1",
            "-0.5",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "infinity",
            "1e10",
            "1000000001",
            "0x10",
            "1_000",
            "five",
        ],
    ),
    ("REFWATCH_SAMPLE", &["", "0", "-1", "1.5", "x", "4294967296", "1e3", "0x10"]),
    ("REFWATCH_OUTPUT", &["", "   ", "/tmp/%d.log", "/tmp/x%", "%", "/tmp/%P", "%%%"]),
    ("REFWATCH_FORMAT", &["", "xml", "JSON", "Text", "jsonl"]),
    ("REFWATCH_MODULES", &["", "a,,b", "a,", ",a", " , ", "lib/x.so", "/abs/*.so", "default,"]),
    ("REFWATCH_CENSUS", &["", "often", "-60", "inf", "nan", "1e10", "60s"]),
    ("REFWATCH_ON_OVERRELEASE", &["", "ignore", "Report", "ABORT", "quarantined", "warn"]),
    ("REFWATCH_WATCHPOINTS", &["", "yes", "no", "true", "1", "ON", "Off"]),
];

#[test]
fn every_setting_has_invalid_values_tested() {
    let tested: Vec<&str> = INVALID.iter().map(|(env, _)| *env).collect();
    let all: Vec<&str> = SETTINGS.iter().map(|s| s.env).collect();
    assert_eq!(tested, all);
}

#[test]
fn every_invalid_value_gives_one_line_naming_the_variable_the_value_and_what_is_accepted() {
    for (env, values) in INVALID {
        let setting = setting(env);
        for value in *values {
            let errors = parse(&[(env, value)]).unwrap_err();
            assert_eq!(errors.len(), 1, "{env}={value:?}");
            let e = &errors[0];
            assert_eq!(
                (e.env, e.flag, e.value.as_str(), e.accepted),
                (*env, setting.flag, *value, setting.accepted)
            );
            let line = e.to_string();
            assert_eq!(
                line,
                format!(
                    "refwatch: {env}={value:?} is not valid (--{}): expected {}",
                    setting.flag, setting.accepted
                )
            );
            assert!(!line.contains('\n'), "{line}");
            // The setting keeps its default.
            let (settings, _) = Settings::from_lookup(|k| (k == *env).then(|| value.into()));
            assert_eq!(settings, Settings::default(), "{env}={value:?}");
        }
    }
}

#[test]
fn the_error_line_in_full() {
    let errors = parse(&[("REFWATCH_SAMPLE", "0")]).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "refwatch: REFWATCH_SAMPLE=\"0\" is not valid (--sample): expected a whole number >= 1 (1: record every event)"
    );
    // The value is shown as given, blanks and all, quoted and escaped.
    let errors = parse(&[("REFWATCH_FORMAT", " xml\t")]).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "refwatch: REFWATCH_FORMAT=\" xml\\t\" is not valid (--format): expected text or json"
    );
}

#[test]
fn each_invalid_setting_is_reported_and_the_valid_ones_still_apply() {
    let errors = parse(&[
        ("REFWATCH_WATCHPOINTS", "maybe"),
        ("REFWATCH_SAMPLE", "10"),
        ("REFWATCH_INTERVAL", "soon"),
        ("REFWATCH_FORMAT", "json"),
    ])
    .unwrap_err();
    // In the table's order, not the environment's.
    let named: Vec<&str> = errors.iter().map(|e| e.env).collect();
    assert_eq!(named, ["REFWATCH_INTERVAL", "REFWATCH_WATCHPOINTS"]);
    let (settings, _) = Settings::from_lookup(|k| match k {
        "REFWATCH_WATCHPOINTS" => Some("maybe".into()),
        "REFWATCH_SAMPLE" => Some("10".into()),
        "REFWATCH_FORMAT" => Some("json".into()),
        _ => None,
    });
    assert_eq!(settings, Settings { sample: 10, format: Format::Json, ..Settings::default() });
}

#[test]
fn durations() {
    let interval = |v: &str| parse(&[("REFWATCH_INTERVAL", v)]).map(|s| s.interval).ok();
    let census = |v: &str| parse(&[("REFWATCH_CENSUS", v)]).map(|s| s.census).ok();
    for (value, expected) in [
        ("5", Duration::from_secs(5)),
        ("0", Duration::ZERO),
        ("0.0", Duration::ZERO),
        ("0.5", Duration::from_millis(500)),
        (".25", Duration::from_millis(250)),
        ("2.", Duration::from_secs(2)),
        ("+2", Duration::from_secs(2)),
        ("1e-3", Duration::from_millis(1)),
        ("1.5e1", Duration::from_secs(15)),
        (" 7 ", Duration::from_secs(7)),
        ("\t3\n", Duration::from_secs(3)),
        ("1e9", Duration::from_secs(1_000_000_000)),
        ("1000000000", Duration::from_secs(1_000_000_000)),
    ] {
        assert_eq!(interval(value), Some(expected), "{value:?}");
        assert_eq!(census(value), Some(expected), "{value:?}");
    }
    assert_eq!(interval("1000000000.5"), None);
    // Shown as seconds, the way they are read back.
    let shown = |d: Duration| Settings { interval: d, ..Settings::default() }.effective()[0].1.clone();
    assert_eq!(shown(Duration::from_millis(250)), "0.25");
    assert_eq!(shown(Duration::from_secs(5)), "5");
    assert_eq!(shown(Duration::ZERO), "0");
}

#[test]
fn sample_is_a_whole_number_from_one() {
    let sample = |v: &str| parse(&[("REFWATCH_SAMPLE", v)]).map(|s| s.sample).ok();
    assert_eq!(sample("1"), Some(1));
    assert_eq!(sample(" 250 "), Some(250));
    assert_eq!(sample("+3"), Some(3));
    assert_eq!(sample("4294967295"), Some(u32::MAX));
}

#[test]
fn output_paths() {
    let output = |v: &str| parse(&[("REFWATCH_OUTPUT", v)]).map(|s| s.output).ok();
    assert_eq!(output("stderr"), Some(Output::Stderr));
    assert_eq!(output(" stderr "), Some(Output::Stderr));
    // Only the exact word is stderr; anything else is a file name.
    assert_eq!(output("STDERR"), Some(Output::Path("STDERR".into())));
    assert_eq!(output("-"), Some(Output::Path("-".into())));
    let out = output("/tmp/rw-%p.%p.log").unwrap();
    assert!(out.per_process());
    assert_eq!(out.path_for(12), Some("/tmp/rw-12.12.log".into()));
    let out = output("/tmp/100%%.log").unwrap();
    assert!(!out.per_process());
    assert_eq!(out.path_for(12), Some("/tmp/100%.log".into()));
    assert_eq!(output("/x/%%%p").unwrap().path_for(3), Some("/x/%3".into()));
    assert_eq!(Output::Stderr.path_for(3), None);
    assert!(!Output::Stderr.per_process());
}

#[test]
fn module_patterns() {
    let modules = |v: &str| parse(&[("REFWATCH_MODULES", v)]).map(|s| s.modules).ok();
    let globs = |g: &[&str]| Some(ModuleFilter::Globs(g.iter().map(|s| s.to_string()).collect()));
    assert_eq!(modules("default"), Some(ModuleFilter::Default));
    assert_eq!(modules(" all "), Some(ModuleFilter::All));
    // Each glob is trimmed; the keywords are only keywords alone and as
    // written.
    assert_eq!(modules(" _fix* , numpy*.so "), globs(&["_fix*", "numpy*.so"]));
    assert_eq!(modules("all,_json*"), globs(&["all", "_json*"]));
    assert_eq!(modules("Default"), globs(&["Default"]));
    assert_eq!(modules("*"), globs(&["*"]));

    let filter = modules("_fix*,*json*").unwrap();
    assert!(filter.watches("_fixture.cpython-312-x86_64-linux-gnu.so", false));
    // Globs watch what they name, standard library or not.
    assert!(filter.watches("_json.cpython-311-x86_64-linux-gnu.so", true));
    assert!(!filter.watches("numpy.so", false));
    assert!(ModuleFilter::Default.watches("numpy.so", false));
    assert!(!ModuleFilter::Default.watches("_json.so", true));
    assert!(ModuleFilter::All.watches("_json.so", true));
}

#[test]
fn keyword_settings() {
    let (on_overrelease, watchpoints) = (setting("REFWATCH_ON_OVERRELEASE"), setting("REFWATCH_WATCHPOINTS"));
    for (value, expected) in [
        ("report", OnOverrelease::Report),
        ("quarantine", OnOverrelease::Quarantine),
        (" abort ", OnOverrelease::Abort),
    ] {
        let mut s = Settings::default();
        on_overrelease.set(&mut s, value).unwrap();
        assert_eq!(s.on_overrelease, expected);
    }
    for (value, expected) in [("on", true), ("off", false)] {
        let mut s = Settings { watchpoints: !expected, ..Settings::default() };
        watchpoints.set(&mut s, value).unwrap();
        assert_eq!(s.watchpoints, expected);
    }
    let mut s = Settings::default();
    setting("REFWATCH_FORMAT").set(&mut s, "text").unwrap();
    assert_eq!(s.format, Format::Text);
}

#[test]
fn effective_values_read_back_to_the_same_settings() {
    let settings = Settings {
        interval: Duration::from_millis(1500),
        sample: 7,
        output: Output::Path("/tmp/rw-%p-100%%.jsonl".into()),
        format: Format::Json,
        modules: ModuleFilter::Globs(vec!["_a*".into(), "b?.so".into()]),
        census: Duration::ZERO,
        on_overrelease: OnOverrelease::Quarantine,
        watchpoints: false,
    };
    let effective = settings.effective();
    let names: Vec<&str> = effective.iter().map(|(env, _)| *env).collect();
    assert_eq!(names, SETTINGS.iter().map(|s| s.env).collect::<Vec<_>>());
    let shown: Vec<&str> = effective.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(shown, ["1.5", "7", "/tmp/rw-%p-100%%.jsonl", "json", "_a*,b?.so", "0", "quarantine", "off"]);
    let (read_back, errors) =
        Settings::from_lookup(|k| effective.iter().find(|(env, _)| *env == k).map(|(_, v)| v.into()));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(read_back, settings);
    // The defaults read back too.
    let defaults = Settings::default().effective();
    let (read_back, errors) =
        Settings::from_lookup(|k| defaults.iter().find(|(env, _)| *env == k).map(|(_, v)| v.into()));
    assert!(errors.is_empty());
    assert_eq!(read_back, Settings::default());
}

#[test]
fn an_output_path_keeps_its_bytes() {
    let raw = OsString::from_vec(b"/tmp/rw-\xff-%p.jsonl".to_vec());
    let (s, errors) = Settings::from_lookup(|k| (k == "REFWATCH_OUTPUT").then(|| raw.clone()));
    assert!(errors.is_empty());
    assert_eq!(s.output.path_for(3), Some(OsString::from_vec(b"/tmp/rw-\xff-3.jsonl".to_vec())));
    // Other settings are text: bytes that are not UTF-8 are not valid.
    let (_, errors) =
        Settings::from_lookup(|k| (k == "REFWATCH_FORMAT").then(|| OsString::from_vec(b"js\xffon".to_vec())));
    assert_eq!(errors.len(), 1);
}
