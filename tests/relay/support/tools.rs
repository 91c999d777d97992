//! Outside tools a suite needs (a browser, HAProxy), and what a test says when
//! one is missing.

use std::io::{self, Write};

/// Writes straight to the process's stderr: the test harness captures
/// `eprintln!` of passing tests, and these lines must be seen.
pub fn loud(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// A test whose outside tool (`tool`, e.g. "BROWSER") is missing: it fails when
/// `require_var=1` (as in CI), else prints a loud SKIPPED banner. `what_not`
/// says what went untested; `hint` how to get the tool.
pub fn unavailable(tool: &str, require_var: &str, reason: &str, what_not: &str, hint: &str) {
    let required = std::env::var(require_var).is_ok_and(|v| v == "1");
    let rule = "!".repeat(78);
    if required {
        panic!(
            "\n{rule}\n{tool} TEST FAILED: {reason}\n{require_var}=1 is set, so this test may \
             not be skipped.\n{hint}\n{rule}"
        );
    }
    loud(&format!(
        "\n{rule}\n!!\n!!  {tool} TEST SKIPPED: {reason}\n!!\n!!  {what_not}\n!!  {hint}, or set \
         {require_var}=1 to make this a failure.\n!!\n{rule}\n\n"
    ));
}
