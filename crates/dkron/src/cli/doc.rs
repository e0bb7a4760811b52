//! `dkron doc --dir`: Markdown documentation of every command.

use anyhow::Context;

use super::Cli;

/// `dkron doc`: one Markdown file per command, with the Hugo front matter Dkron's docs use
/// (`date`, `title`, `slug`, `url: /cli/<name>/`). Answers how many files it wrote.
pub(super) fn write_docs(dir: &std::path::Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}: pass another --dir", dir.display()))?;
    let root = <Cli as clap::CommandFactory>::command();
    let date = crate::clock::wall()
        .to_zoned(jiff::tz::TimeZone::system())
        .date();
    let mut stack = vec![(vec!["dkron".to_string()], root.clone(), None::<String>)];
    let mut written = 0;
    while let Some((path, command, parent)) = stack.pop() {
        let name = path.join(" ");
        let slug = path.join("_");
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut md = format!(
            "---\ndate: {date}\ntitle: \"{name}\"\nslug: {slug}\nurl: /cli/{slug}/\n---\n## {name}\n\n{about}\n\n### Synopsis\n\n```\n{name}{}\n```\n",
            if command.has_subcommands() {
                " [command]"
            } else {
                " [flags]"
            }
        );
        let options: Vec<String> = command
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .map(|a| {
                let flag = match (a.get_short(), a.get_long()) {
                    (Some(s), Some(l)) => format!("-{s}, --{l}"),
                    (None, Some(l)) => format!("    --{l}"),
                    (Some(s), None) => format!("-{s}"),
                    (None, None) => format!("<{}>", a.get_id()),
                };
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                let defaults: Vec<String> = a
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                if defaults.is_empty() {
                    format!("  {flag:<32} {help}")
                } else {
                    format!("  {flag:<32} {help} (default {})", defaults.join(","))
                }
            })
            .collect();
        if !options.is_empty() {
            md.push_str(&format!(
                "\n### Options\n\n```\n{}\n```\n",
                options.join("\n")
            ));
        }
        let mut see_also = Vec::new();
        if let Some(parent) = &parent {
            let parent_slug = path[..path.len() - 1].join("_");
            see_also.push(format!("* [{parent}](/cli/{parent_slug}/)"));
        }
        for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            let sub_about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            see_also.push(format!(
                "* [{}](/cli/{}/)\t - {sub_about}",
                sub_path.join(" "),
                sub_path.join("_")
            ));
            stack.push((sub_path, sub.clone(), Some(name.clone())));
        }
        if !see_also.is_empty() {
            md.push_str(&format!("\n### SEE ALSO\n\n{}\n", see_also.join("\n")));
        }
        let file = dir.join(format!("{slug}.md"));
        std::fs::write(&file, md).with_context(|| format!("cannot write {}", file.display()))?;
        written += 1;
    }
    Ok(written)
}
