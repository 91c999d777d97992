//! The pages a piping relay serves on its reserved paths: the send page, the
//! same as a plain form for browsers without JavaScript, and the usage text.

use super::find_param;
use crate::server::conn::Conn;
use crate::server::reply;

/// The send page (a file or a text to a path, from a browser).
pub(super) const INDEX: &str = include_str!("pages/index.html");

/// The form page for browsers without JavaScript: choose a path and a mode
/// (a file or a text) with a `GET` form, then send with a `multipart/form-data`
/// form whose first part is what the receivers get.
pub(super) fn noscript_page(query: &[u8], nonce: &str, scratch: &mut Vec<u8>) -> String {
    let path = match find_param(query, b"path", scratch) {
        true => escape_html(&String::from_utf8_lossy(scratch)),
        false => String::new(),
    };
    let text_mode = find_param(query, b"mode", scratch) && scratch == b"text";
    let field = if text_mode {
        r#"<label>Text <textarea name="input_text"></textarea></label>"#
    } else {
        r#"<label>File <input type="file" name="input_file"{disabled}></label>"#
    };
    let (action, disabled) = match path.is_empty() {
        true => (String::new(), " disabled"),
        false => (format!(r#" action="{path}""#), ""),
    };
    include_str!("pages/noscript.html")
        .replace("{field}", field)
        .replace("{nonce}", nonce)
        .replace("{path}", &path)
        .replace("{action}", &action)
        .replace("{disabled}", disabled)
        .replace("{file_checked}", if text_mode { "" } else { " checked" })
        .replace("{text_checked}", if text_mode { " checked" } else { "" })
}

/// Text made safe inside an HTML attribute or element.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Braces too: the page's placeholders must not come from a query.
            '{' => out.push_str("&#123;"),
            '}' => out.push_str("&#125;"),
            c => out.push(c),
        }
    }
    out
}

/// A fresh nonce for a page's style: 16 random bytes, base64.
pub(super) fn nonce() -> String {
    let mut bytes = [0u8; 18];
    crate::sys::process::fill_random(&mut bytes);
    let mut text = [0u8; 24];
    for (group, out) in bytes.chunks_exact(3).zip(text.chunks_exact_mut(4)) {
        crate::http::sse::base64_group(&[group[0], group[1], group[2]], out);
    }
    text.iter().map(|&c| char::from(c)).collect()
}

/// The usage page, with curl lines for this relay as the client reached it.
pub(super) fn help_page(conn: &Conn) -> String {
    let scheme = if conn.https { "https" } else { "http" };
    let host = match conn.req.host.as_slice() {
        b"" => "hostname".into(),
        host => String::from_utf8_lossy(host),
    };
    let url = format!("{scheme}://{host}");
    format!(
        "httprelay {version}: Piping Server transfers\n\
         \n\
         Receive:\n    curl {url}/mypath\n\
         \n\
         Send a file:\n    curl -T myfile {url}/mypath\n\
         Send text:\n    echo 'hello!' | curl -T - {url}/mypath\n\
         Send a directory:\n    tar zcf - ./mydir | curl -T - {url}/mypath\n\
         \n\
         Several receivers: add ?n=3 to the sender's and every receiver's URL.\n",
        version = reply::VERSION
    )
}
