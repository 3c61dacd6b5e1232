//! Self-contained HTML pages people look at (the status page, drill
//! reports): escaping and the one style sheet, inlined. No script and no
//! external asset: the pages open in an air-gapped region and without
//! JavaScript.

/// Escapes `s` for HTML text and attribute values (`& < > " '`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The style sheet every page inlines.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ok{color:#176f2c;font-weight:bold}.bad{color:#b00020;font-weight:bold}.warn{color:#8a5a00}\
.bar{width:12em;height:.8em;background:#eee;border:1px solid #bbb}.fill{height:100%}\
.fill.ok{background:#4caf50}.fill.bad{background:#e53935}ul{margin:.2em 0;padding-left:1.2em}\
.lane{position:relative;width:40em;height:1em;background:#f6f6f6;border:1px solid #ddd}\
.span{position:absolute;top:0;height:100%}.span.ok{background:#4caf50}.span.bad{background:#e53935}\
.rto{position:absolute;top:-.3em;height:1.6em;border-left:2px dashed #b00020}";

/// The start of a page titled `title` (escaped here), its style inlined.
pub fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert!(head("<t>").contains("<title>&lt;t&gt;</title>"));
    }
}
