//! The parsers that take user input — build arguments, ignore files, Dockerfiles, image
//! references, remote-context URLs — return errors or warnings for anything, never panic.

use std::collections::BTreeMap;

use kiln_plan::image_ref::ImageRef;
use kiln_plan::plan::EnvVar;
use kiln_plan::remote;
use kiln_worker::build::dockerignore::DockerIgnore;
use kiln_worker::build::{args, scan};
use proptest::prelude::*;

/// Text biased towards the characters these parsers give meaning to.
fn syntax(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("FROM ".to_string()),
            Just("ARG ".to_string()),
            Just(" AS ".to_string()),
            Just("--platform=".to_string()),
            Just("COPY --from=".to_string()),
            Just("\\\n".to_string()),
            Just("# escape=`\n".to_string()),
            "[-=:@/.!*?#$'\"{}\\[\\]\\\\ \n\t`a-zA-Z0-9]{1,4}",
            any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn build_arguments(tokens in proptest::collection::vec(syntax(4), 0..8)) {
        let env = [EnvVar { name: "A".into(), value: "1".into() }];
        let _ = args::parse(&tokens, &env);
    }

    #[test]
    fn ignore_files(content in syntax(24), path in syntax(6)) {
        if let Ok(ignore) = DockerIgnore::parse(content.as_bytes()) {
            let _ = ignore.is_excluded(&path);
            let _ = ignore.may_include_below(&path);
        }
    }

    #[test]
    fn dockerfiles(content in syntax(40), target in proptest::option::of(syntax(3))) {
        let build_args = BTreeMap::from([("A".to_string(), "x".to_string())]);
        let _ = scan::scan(&content, &build_args, target.as_deref());
    }

    #[test]
    fn image_references(reference in syntax(6)) {
        if let Ok(parsed) = ImageRef::parse(&reference) {
            // What parses prints back to the same text.
            prop_assert_eq!(parsed.to_string(), reference);
        }
    }

    #[test]
    fn context_arguments(context in syntax(6)) {
        let _ = remote::detect(&context);
        let _ = remote::redact(&context);
    }
}
