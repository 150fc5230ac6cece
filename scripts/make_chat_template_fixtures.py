#!/usr/bin/env python3
"""Chat-template fixtures: real templates rendered by jinja2 exactly as transformers does.

Copies the 70 real chat templates that ship in the llama-cpp-python sdist
(vendor/llama.cpp/models/templates/), plus Mixtral's and OLMoE's from their
tokenizer_config.json, into Tests/Fixtures/chat_templates/templates/, and renders each on the
conversations of cases.json with transformers' own jinja2 environment
(`_compile_jinja_template`: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, {% generation %}, raise_exception, strftime_now, tojson without ASCII escaping).
Writes expected.json: per template and case, the rendered text or the error jinja2 raised.

    pip install jinja2 transformers
    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d /tmp/sdist
    python3 scripts/make_chat_template_fixtures.py /tmp/sdist/llama_cpp_python-*.tar.gz
"""
import datetime as _dt
import json
import os
import sys
import tarfile
from pathlib import Path

os.environ["TZ"] = "UTC"
import time

time.tzset()

import transformers.utils.chat_template_utils as ctu  # noqa: E402

# strftime_now formats this instant (the Swift test passes the same one).
NOW = _dt.datetime(2026, 1, 15, 12, 0, 0)


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


ctu.datetime = _FixedDatetime

OUT = Path(__file__).resolve().parent.parent / "Tests" / "Fixtures" / "chat_templates"

# Transcribed from the tokenizer_config.json of mistralai/Mixtral-8x7B-Instruct-v0.1 and
# allenai/OLMoE-1B-7B-0924-Instruct, which the sdist does not carry.
EXTRA = {
    "mistralai-Mixtral-8x7B-Instruct-v0.1.jinja": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    ),
    "allenai-OLMoE-1B-7B-0924-Instruct.jinja": (
        "{{ bos_token }}{% for message in messages %}\n{% if message['role'] == 'system' %}\n"
        "{{ '<|system|>\\n' + message['content'] }}\n{% elif message['role'] == 'user' %}\n"
        "{{ '<|user|>\\n' + message['content'] }}\n{% elif message['role'] == 'assistant' %}\n"
        "{% if not loop.last %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% else %}\n"
        "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>\\n' }}\n{% endif %}\n{% endfor %}"
    ),
}

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city's name."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

CASES = [
    {"name": "user", "add_generation_prompt": True,
     "messages": [{"role": "user", "content": "Hello, who are you?"}]},
    {"name": "system_multi_turn", "add_generation_prompt": True,
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "2+2 equals 4."},
                  {"role": "user", "content": "And 3+3?"}]},
    {"name": "no_generation_prompt", "add_generation_prompt": False,
     "messages": [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello! How can I help?"}]},
    {"name": "tools", "add_generation_prompt": True, "tools": [WEATHER_TOOL],
     "messages": [{"role": "user", "content": "What's the weather in Paris?"},
                  {"role": "assistant", "content": "",
                   "tool_calls": [{"id": "call_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
                   "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"}]},
    {"name": "reasoning", "add_generation_prompt": True,
     "extra": {"enable_thinking": False, "reasoning_effort": "low"},
     "messages": [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello.", "reasoning_content": "The user greets me."},
                  {"role": "user", "content": "Bye"}]},
    {"name": "unicode", "add_generation_prompt": True,
     "messages": [{"role": "user", "content": "  Héllo 🌍 \"quoted\" 'single'\n\tnew line <b>&</b>  "}]},
]


# Small templates for the features real templates touch lightly: each rendered with `context`.
SNIPPETS = [
    ("ws_dash", "a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("ws_plus", "x\n  {%+ if true %}y{% endif %}\n", {}),
    ("ws_lstrip_comment", "a\n   {# note #}\nb", {}),
    ("ws_var_no_trim", "{{ 1 }}\n{{ 2 }}\n", {}),
    ("ws_tabs", "\t{% for i in [1, 2] %}\n\t{{ i }}\n\t{% endfor %}\n", {}),
    ("ws_not_line_start", "a {% if true %}b{% endif %} c", {}),
    ("ws_crlf", "a\r\n{% if true %}\r\nb{% endif %}\r\n", {}),
    ("ws_dash_var", "a   {{- 'b' -}}   c", {}),
    ("loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.cycle('o', 'e') }}|{% endfor %}", {}),
    ("loop_prev_next", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}", {}),
    ("loop_else", "{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("loop_filter", "{% for x in range(10) if x is odd %}{{ x }}{{ loop.index }} {% endfor %}", {}),
    ("loop_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("loop_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": [1, 2]}}),
    ("loop_dict_keys", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "y": 2}}),
    ("loop_nested", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}", {}),
    ("scope_loop", "{% set a = 1 %}{% for i in [1] %}{% set a = 2 %}{{ a }}{% endfor %}{{ a }}", {}),
    ("scope_if", "{% if true %}{% set a = 3 %}{% endif %}{{ a }}", {}),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("set_tuple", "{% set a, b = [1, 2] %}{{ b }}{{ a }}{% set t = 1, 2 %}{{ t }}", {}),
    ("set_block", "{% set x %}  hi {{ 1 + 1 }}  {% endset %}[{{ x }}]{% set y | upper | trim %} yo {% endset %}[{{ y }}]", {}),
    ("macro", "{% macro m(a, b='B', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, 2) }} {{ m(1, c=3) }}", {}),
    ("macro_scope", "{% set g = 'G' %}{% macro m() %}{{ g }}{% set g = 'L' %}{{ g }}{% endmacro %}{{ m() }}{{ g }}", {}),
    ("macro_caller", "{% macro wrap(t) %}<{{ t }}>{{ caller() }}</{{ t }}>{% endmacro %}{% call wrap('b') %}body{% endcall %}", {}),
    ("filter_block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}", {}),
    ("raw", "{% raw %}{{ not rendered }}{% endraw %}", {}),
    ("generation", "{% generation %}gen {{ 1 }}{% endgeneration %}", {}),
    ("print_values", "{{ none }} {{ true }} {{ 1.0 }} {{ 1.5e-5 }} {{ 1e16 }} {{ 123456789.125 }} {{ 0.1 + 0.2 }} {{ [1, 'a', none, 2.5, {'k': 'v'}] }} {{ (1, 2) | list }} {{ \"it's\" }} {{ [\"it's\", 'q\"'] }}", {}),
    ("arith", "{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 7.5 // 2 }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ 10 - 2 - 3 }}", {}),
    ("concat", "{{ 1 ~ 2 ~ 'x' ~ none ~ true }} {{ 'a' + 'b' }} {{ [1] + [2] }}", {}),
    ("err_concat_precedence", "{{ 1 + 2 ~ 3 }}", {}),
    ("compare", "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ 2 >= 2 }} {{ 'x' != 'y' }} {{ none == none }}", {}),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or none }} {{ not 0 }} {{ not 1 and 0 }} {{ 1 if 0 else 2 }} {{ 'x' if true }}|{{ 'y' if false }}|", {}),
    ("in_ops", "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ '' in 'x' }}", {}),
    ("precedence_filters", "{{ -3 | abs }} {{ 'a' ~ 'b' | upper }} {{ not 'x' is string }} {{ [3, 1, 2] | sort | first }}", {}),
    ("subscripts", "{{ s[1] }} {{ s[-1] }} {{ s[1:] }} {{ s[:2] }} {{ s[::-1] }} {{ s[::2] }} {{ l[-2:] }} {{ l[10] }}|{{ d['a'] }} {{ d.a }} {{ l.0 }}", {"s": "hello", "l": [1, 2, 3], "d": {"a": 5}}),
    ("str_methods", "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a-b-c'.rsplit('-', 1) }}|{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'abc'.upper() }}{{ 'ABC'.lower() }}|{{ 'abcabc'.find('c') }}{{ 'abc'.find('z') }}|{{ 'a,b'.count(',') }}|{{ '-'.join(['a', 'b']) }}|{{ '{} and {}'.format(1, 'two') }}|{{ '{x}!'.format(x=3) }}", {}),
    ("dict_methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 7) }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }}", {"d": {"a": 1, "b": [2]}}),
    ("filters_text", "{{ ' x ' | trim }}|{{ 'ab' | upper }}{{ 'AB' | lower }}|{{ 'hello there' | title }}|{{ 'hELLO' | capitalize }}|{{ 'a-b' | replace('-', '+') }}|{{ 'x\ny\n\nz' | indent(2) }}|{{ 'x\ny' | indent(2, true) }}|{{ 'x\n\ny' | indent(2, blank=true) }}|{{ 'a b  c' | wordcount }}|{{ '<a&b>' | e }}|{{ 3 | string }}", {}),
    ("filters_lists", "{{ [3, 1, 2] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ ['b', 'A', 'c'] | sort }} {{ [1, 2, 2, 1] | unique | list }} {{ [1, 2] | first }} {{ [1, 2] | last }} {{ [1, 2, 3] | sum }} {{ [4, 2] | min }} {{ [4, 2] | max }} {{ [1, 2] | join(', ') }} {{ 'abc' | list }} {{ [1, 2] | length }} {{ 'abc' | count }} {{ [1, 2] | reverse | list }} {{ 'abc' | reverse }}", {}),
    ("filters_attrs", "{{ users | map(attribute='name') | join(',') }} {{ users | selectattr('admin') | map(attribute='name') | list }} {{ users | rejectattr('admin') | list | length }} {{ users | selectattr('name', 'equalto', 'b') | list }} {{ [1, 2, 3, 4] | select('even') | list }} {{ [1, 2, 3] | reject('odd') | list }} {{ ['a', 'b'] | map('upper') | list }} {{ users | sort(attribute='name', reverse=true) | map(attribute='name') | join }} {{ users | map(attribute='age', default=0) | list }} {{ users | sum(attribute='n') }}", {"users": [{"name": "a", "admin": True, "n": 1}, {"name": "b", "admin": False, "n": 2}]}),
    ("filters_dicts", "{{ d | dictsort }} {{ d | dictsort(by='value') }} {{ d | dictsort(reverse=true) }} {{ d | items | list }} {{ d | length }} {{ d | list }}", {"d": {"b": 2, "a": 3, "C": 1}}),
    ("filters_numbers", "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.1 | round(0, 'ceil') }} {{ -3 | abs }} {{ true | int }}", {}),
    ("filters_default", "{{ x | default('d') }} {{ none | default('d') }} {{ '' | default('d', true) }} {{ 0 | d('z', true) }} {{ y | default(1) + 1 }}", {"y": 5}),
    ("tojson", "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v | tojson(sort_keys=true) }}|{{ v | tojson(separators=(',', ':')) }}|{{ v | tojson(ensure_ascii=true) }}|{{ s | tojson }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson }}|{{ 1.0 | tojson }}", {"v": {"b": [1, 2.5, None, True], "a": {"é": "✓ 🌍"}}, "s": "aé\u0001\t\"\\\u007f"}),
    ("tests", "{{ x is defined }}{{ y is defined }}{{ y is undefined }}{{ none is none }}{{ 1 is number }}{{ 1.5 is float }}{{ 1 is integer }}{{ true is boolean }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is sequence }}{{ [] is iterable }}{{ 'a' is iterable }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 'ab' is lower }}{{ 'AB' is upper }}{{ 1 is eq 1 }}{{ 1 is ne 2 }}{{ 1 is lt 2 }}{{ 2 is ge 2 }}{{ 1 is in [1] }}{{ x is sameas none }}{{ true is true }}{{ 0 is false }}{{ range is callable }}", {"x": None}),
    ("undefined_ops", "[{{ missing }}][{{ missing | length }}][{{ missing is defined }}][{% for x in missing %}x{% endfor %}][{{ missing ~ 'a' }}][{{ none.attr }}][{{ d.missing }}][{{ d['missing'] }}][{{ missing | default('x') }}]", {"d": {}}),
    ("range_global", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | list }}", {}),
    ("dict_global", "{{ dict(a=1, b=2) }} {{ dict(a=1).a }}", {}),
    ("strftime", "{{ strftime_now('%Y-%m-%d %d %b %B %A %H:%M') }}", {}),
    ("markup_concat", "{{ 'a<'|safe + '<b>' + '&'|safe }}|{{ '<x>' + 'y'|safe }}|{{ ('<'|safe) ~ '<' }}", {}),
    ("int_keys", "{% set m = {1: 'one', 2: 'two'} %}{{ m[1] }} {{ m | dictsort }} {{ m }} {{ m | tojson }} {{ 1 in m }}", {}),
    ("string_escapes", "{{ 'a\\nb' }}|{{ \"tab\\there\" }}|{{ 'q\\'s' }}|{{ 'a' 'b' }}", {}),
    ("comments", "a{# comment {{ x }} #}b{#- trimmed -#} c", {}),
    ("messages_loop", "{% for m in messages %}{% if loop.first and m.role != 'system' %}[default system]{% endif %}<{{ m['role'] }}>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}", {"messages": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}], "add_generation_prompt": True}),
    # Errors jinja2 raises: each must throw.
    ("err_raise", "{{ raise_exception('bad role') }}", {}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_undefined_call", "{{ missing() }}", {}),
    ("err_add_types", "{{ 'a' + 1 }}", {}),
    ("err_unknown_filter", "{{ 1 | nosuchfilter }}", {}),
    ("err_unknown_test", "{{ 1 is nosuchtest }}", {}),
    ("err_syntax_unclosed", "{% if true %}x", {}),
    ("err_syntax_tag", "{% nosuchtag %}", {}),
    ("err_syntax_expr", "{{ 1 + }}", {}),
    ("err_list_append", "{% set l = [] %}{{ l.append(1) }}", {}),
    ("err_dict_update", "{% set d = {} %}{{ d.update({'a': 1}) }}", {}),
    ("err_namespace_assign", "{% set x = 1 %}{% set x.a = 2 %}", {}),
    ("err_iterate_int", "{% for x in 5 %}{% endfor %}", {}),
    ("err_length_int", "{{ 5 | length }}", {}),
    ("err_tojson_generator", "{{ [1] | map('string') | tojson }}", {}),
    ("err_range_big", "{{ range(1000000) | length }}", {}),
    ("err_div_zero", "{{ 1 // 0 }}", {}),
    ("err_none_iter", "{% for x in none %}{% endfor %}", {}),
]


def render_snippet(source, context):
    try:
        return {"output": ctu._compile_jinja_template(source).render(**context)}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def render(source, case):
    try:
        template = ctu._compile_jinja_template(source)
        return {"output": template.render(
            messages=case["messages"], tools=case.get("tools"), documents=None,
            add_generation_prompt=case["add_generation_prompt"], **SPECIAL, **case.get("extra", {}))}
    except Exception as e:  # what jinja2 raised is the expectation
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    sdist = sys.argv[1]
    templates = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if "/vendor/llama.cpp/models/templates/" in member.name and member.name.endswith(".jinja"):
                templates[os.path.basename(member.name)] = tar.extractfile(member).read().decode("utf-8")
    templates.update(EXTRA)
    (OUT / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in templates.items():
        (OUT / "templates" / name).write_text(text, encoding="utf-8")
    expected = {}
    for name in sorted(templates):
        expected[name] = {case["name"]: render(templates[name], case) for case in CASES}
    cases = [{"name": c["name"], "add_generation_prompt": c["add_generation_prompt"], "messages": c["messages"],
              "tools": c.get("tools"), "extra": c.get("extra", {})} for c in CASES]
    meta = {"special_tokens": SPECIAL, "now_utc": NOW.isoformat() + "Z", "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    snippets = [{"name": n, "template": t, "context": c, **render_snippet(t, c)} for n, t, c in SNIPPETS]
    (OUT / "snippets.json").write_text(json.dumps(snippets, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    errors = sum("error" in r for t in expected.values() for r in t.values())
    print(f"{len(templates)} templates x {len(CASES)} cases, {errors} renders raised")


if __name__ == "__main__":
    main()
