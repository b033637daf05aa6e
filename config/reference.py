"""The configuration reference, docs/configuration.md, generated from the settings module.

    python -m config.reference > docs/configuration.md   # write it
    python -m config.reference --check                    # exit 1 when it is out of date

1. Read .env.example: its sections (`# --- Title ---`) and in each its variables, each
   described by the comment lines right above it.
2. Take each variable's default and type from config/settings.py (ENV_DEFAULTS, ENV_TYPES),
   which records them as it reads the environment.
3. Write the intro, then one table per section.
"""

import re
import sys
from pathlib import Path
from typing import NamedTuple

from config import settings

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
REFERENCE = ROOT / "docs" / "configuration.md"
COMMAND = ".venv/bin/python -m config.reference > docs/configuration.md"

INTRO = f"""\
# Configuration reference

Generated from `config/settings.py` (names, defaults, types) and `.env.example` (sections,
descriptions) by `{COMMAND}`;
`tests/test_config.py` fails when this file is out of date. Edit those two files, not this one.

- **The environment only.** Sightline loads no `.env` file: set the variables in the shell,
  in the process manager's or the container's environment (on Kubernetes, a ConfigMap and
  a Secret: see `docs/deployment.md`). `.env.example` lists them all with their defaults.
- **Empty means unset.** A variable set to an empty string (or only spaces) gets its default;
  spaces around a value are ignored.
- **Secrets from files.** A variable of type *secret* can instead be read from a file:
  `NAME_FILE=/path/to/file` (a mounted Docker or Kubernetes secret, say) is used in place of
  `NAME`; the file's surrounding whitespace, trailing newline included, is dropped.
- **Checked at start.** Every process (ingest, web, worker, beat, `serve`, any `manage.py`
  command) validates the whole configuration as it starts: a value that is not of its
  variable's type, or is out of its range, stops start-up with a message naming the variable,
  e.g. `sightline: configuration error: SIGHTLINE_WEB_PORT must be between 1 and 65535, got 0`
  (`manage.py` exits with status 2). So do ports that are not all different, a TLS
  certificate without its key, and a TLS or `_FILE` file that cannot be read.
- **Types.** *boolean*: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case.
  *integer* and *port*: a whole number in the range shown, bounds included. *list*: items
  separated by commas, spaces around them ignored. *URL*: one of the schemes shown.
  *file* and *directory*: a path, relative to the working directory unless absolute.
"""


class Variable(NamedTuple):
    name: str
    default: str  # as written in .env.example
    description: str


class Section(NamedTuple):
    title: str
    variables: list


def read_env_example(path=ENV_EXAMPLE):
    """The sections of .env.example, each with its variables and their descriptions."""
    sections, comment = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        header = re.fullmatch(r"# --- (.+) ---", line)
        if header:
            sections.append(Section(header[1], []))
            comment = []
        elif line.startswith("#"):
            comment.append(line.lstrip("#").strip())
        elif not line:
            comment = []
        else:
            name, _, value = line.partition("=")
            if not sections:
                raise ValueError(f"{path.name}:{number}: {name} comes before the first '# --- Section ---' line")
            sections[-1].variables.append(Variable(name.strip(), value.strip(), " ".join(comment)))
            comment = []
    return sections


def describe_type(env_type):
    kind, low, high, values = env_type
    if kind in ("integer", "port"):
        if low is not None and high is not None:
            return f"{kind}, {low}–{high}"
        if low is not None:
            return f"{kind}, ≥ {low}"
        return kind if high is None else f"{kind}, ≤ {high}"
    if kind == "url":
        return "URL: " + ", ".join(f"`{scheme}://`" for scheme in values)
    if kind == "choice":
        return "one of " + ", ".join(f"`{value}`" for value in values)
    return kind


def _markdown(text, names):
    """A description as table-cell Markdown: variable names as code, no HTML, no cell breaks.

    Only names with an underscore are marked: DEBUG is also a log level."""
    text = text.replace("|", "\\|").replace("<", "\\<")
    names = sorted((re.escape(name) for name in names if "_" in name), key=len, reverse=True)
    pattern = r"(?<![`\w])(" + "|".join(names) + r")(?![`\w])"
    return re.sub(pattern, r"`\1`", text)


def generate():
    sections = read_env_example()
    listed = [variable.name for section in sections for variable in section.variables]
    missing = sorted(set(settings.ENV_DEFAULTS) - set(listed))
    unknown = sorted(set(listed) - set(settings.ENV_DEFAULTS))
    if missing or unknown:
        raise ValueError(f".env.example and config/settings.py disagree: not in .env.example {missing}, "
                         f"not read by the settings {unknown}")
    out = [INTRO.rstrip("\n")]
    for section in sections:
        out += ["", f"## {section.title}", "", "| Variable | Default | Type | Description |", "|---|---|---|---|"]
        for variable in section.variables:
            default = settings.ENV_DEFAULTS[variable.name]
            out.append(f"| `{variable.name}` | {f'`{default}`' if default else 'unset'} "
                       f"| {describe_type(settings.ENV_TYPES[variable.name])} "
                       f"| {_markdown(variable.description, settings.ENV_DEFAULTS)} |")
    return "\n".join(out) + "\n"


def main(argv):
    text = generate()
    if argv == ["--check"]:
        if not REFERENCE.is_file() or REFERENCE.read_text() != text:
            print(f"docs/configuration.md is out of date; regenerate it with: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m config.reference [--check]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
