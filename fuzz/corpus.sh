#!/usr/bin/env bash
# Builds the starting corpora of long fuzz runs in fuzz/corpus/<target>/ (gitignored): our
# own seeds from fuzz/seeds/<target>/ plus inputs made at run time from the developers'
# corpus in ../shared/corpus, which is never copied into the repository.
#
#   fuzz/corpus.sh [target...]     (default: every target)
#   cargo fuzz run -O <target> fuzz/corpus/<target> -- -max_total_time=600
set -euo pipefail
cd "$(dirname "$0")"

shared=../../shared/corpus
test -d "$shared" || { echo "corpus.sh: $shared is missing" >&2; exit 1; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(smtp_session message_analyze config_parse imap_session ingest_fetch
        forward_extract subject_normalize placeholders)
fi

# Every corpus message once: "<theme>_<file>" → path.
mapfile -t messages < <(cd "$shared" && find . -name '*.eml' | sed 's|^\./||' | sort)
name() { echo "${1//\//_}"; }

for t in "${targets[@]}"; do
    out="corpus/$t"
    mkdir -p "$out"
    if [ -d "seeds/$t" ]; then
        cp seeds/"$t"/* "$out"/
    fi
    case "$t" in
        smtp_session | message_analyze | ingest_fetch)
            for m in "${messages[@]}"; do
                cp "$shared/$m" "$out/$(name "$m")"
            done
            ;;
        forward_extract)
            # First byte even: the message as it is; odd: the message as a forward's body.
            for m in "${messages[@]}"; do
                { printf '\0'; cat "$shared/$m"; } >"$out/$(name "$m")"
            done
            for m in "${messages[@]}"; do
                case "$m" in forwards/*) { printf '\1'; cat "$shared/$m"; } >"$out/body_$(name "$m")" ;; esac
            done
            ;;
        placeholders)
            # Mode 2: the whole submission rewrite of a message.
            for m in "${messages[@]}"; do
                { printf '\2'; cat "$shared/$m"; } >"$out/$(name "$m")"
            done
            ;;
        subject_normalize)
            for m in "${messages[@]}"; do
                grep -a -i -m1 '^subject:' "$shared/$m" | sed 's/^[^:]*: *//' | tr -d '\r\n' \
                    >"$out/$(name "$m").txt" || true
            done
            ;;
        imap_session)
            # Each MIME test message appended, then fetched part by part.
            for m in "${messages[@]}"; do
                case "$m" in mime/*) ;; *) continue ;; esac
                size=$(wc -c <"$shared/$m")
                {
                    printf 'a APPEND INBOX {%d}\r\n' "$size"
                    cat "$shared/$m"
                    printf '\r\nb SELECT INBOX\r\nc FETCH * (BODYSTRUCTURE ENVELOPE BODY[] BODY[1] BODY[1.MIME] BODY[2] BODY[1.1])\r\nd SEARCH TEXT the\r\n'
                } >"$out/$(name "$m")"
            done
            ;;
        config_parse)
            cp ../config/*.toml "$out"/
            ;;
    esac
    echo "fuzz/corpus/$t: $(find "$out" -type f | wc -l) inputs"
done
