#!/usr/bin/env bash
# Checks the CI/CD pipeline files offline, with the pinned tools from scripts/iac-tools.sh:
#   - actionlint on .github/workflows/*.yml (with its shellcheck integration: the venv's bin is
#     first on PATH, so actionlint finds the venv's shellcheck for the run: scripts),
#   - yamllint --strict on the workflows (config: .github/.yamllint),
#   - every third-party `uses:` pinned by a full 40-hex commit SHA with a version comment,
#   - a basic sanity check of jenkins/Jenkinsfile. A real Jenkinsfile linter (declarative
#     validation) needs a Jenkins server (`jenkins-cli declarative-linter` or the
#     /pipeline-model-converter/validate endpoint); this only checks structure and a few rules.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

venv="$(bash scripts/iac-tools.sh)"
export PATH="${venv}/bin:${PATH}"

shopt -s nullglob
workflows=(.github/workflows/*.yml)
if (( ${#workflows[@]} == 0 )); then
  echo "pipelines-check: no workflow files under .github/workflows" >&2
  exit 1
fi

echo "== actionlint $(actionlint -version | head -n1) (shellcheck: $(command -v shellcheck || echo none))"
actionlint -shellcheck "$(command -v shellcheck || true)" "${workflows[@]}"

echo "== yamllint --strict"
yamllint --strict -c .github/.yamllint "${workflows[@]}"

echo "== action pinning"
"${venv}/bin/python" - "${workflows[@]}" <<'PY'
import re
import sys

bad = []
pattern = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
for path in sys.argv[1:]:
    for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
        m = pattern.match(line)
        if not m:
            continue
        ref, rest = m.groups()
        if ref.startswith("./") or ref.startswith("docker://"):
            continue
        if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref) or not re.search(r"#\s*v\d", rest):
            bad.append(f"{path}:{lineno}: not pinned by full SHA with a version comment: {line.strip()}")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PY
echo "all uses: pinned"

echo "== Jenkinsfile sanity (not a real linter: that needs a Jenkins server)"
"${venv}/bin/python" - jenkins/Jenkinsfile <<'PY'
import re
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
errors = []


def strip(src):
    """Drop comments and string literals so braces inside them are not counted."""
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif src.startswith("'''", i) or src.startswith('"""', i):
            q = src[i:i + 3]
            j = src.find(q, i + 3)
            if j < 0:
                errors.append("unterminated triple-quoted string")
                return "".join(out)
            i = j + 3
            out.append("S")
        elif src[i] in "'\"":
            q, j = src[i], i + 1
            while j < n and src[j] != q:
                if src[j] == "\\":
                    j += 1
                if src[j] == "\n":
                    errors.append(f"unterminated string at offset {i}")
                    break
                j += 1
            i = j + 1
            out.append("S")
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


code = strip(text)
for open_c, close_c in ("{}", "()", "[]"):
    depth = 0
    for ch in code:
        if ch == open_c:
            depth += 1
        elif ch == close_c:
            depth -= 1
            if depth < 0:
                break
    if depth != 0:
        errors.append(f"unbalanced {open_c}{close_c} (depth {depth})")

for needle in ("pipeline {", "agent ", "stages {", "options {", "disableConcurrentBuilds()",
               "timeout(", "post {", "always {", "failure {", "input {", "buildingTag()"):
    if needle not in text:
        errors.append(f"missing {needle!r}")

stages = re.findall(r"stage\('([^']+)'\)", text)
for want in ("Checkout", "Test", "IaC checks", "Image", "Push", "AMI", "Plan", "Approve", "Apply / roll"):
    if want not in stages:
        errors.append(f"missing stage {want!r}")

# Secrets must not be interpolated by Groovy ("...${GHCR_PSW}...") or echoed. Triple
# single-quoted sh scripts are not interpolated by Groovy (the shell expands them), so blank them
# out first, keeping the line numbers.
groovy = re.sub(r"'''.*?'''", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
for lineno, line in enumerate(groovy.splitlines(), 1):
    if re.search(r'"[^"]*\$\{?(GHCR_PSW|COSIGN_PASSWORD|AWS_SECRET_ACCESS_KEY)', line):
        errors.append(f"line {lineno}: secret in a Groovy-interpolated string")
for lineno, line in enumerate(text.splitlines(), 1):
    if re.search(r"\becho\b.*(PSW|PASSWORD|SECRET)", line):
        errors.append(f"line {lineno}: secret echoed")

for e in errors:
    print(f"{path}: {e}")
if errors:
    sys.exit(1)
print(f"{path}: ok ({len(stages)} stages: {', '.join(stages)})")
PY

echo "pipelines-check: ok"
