"""The page's translations: complete, compiled, and in step with the code.

``django_redis_sessions/locale/django.pot`` holds every marked string; each
language's ``django.po`` translates all of them, and the ``django.mo`` shipped
beside it is exactly what GNU ``msgfmt`` makes of that ``.po``. A string
marked in the code but missing from the catalog, or a ``.mo`` not rebuilt
after its ``.po`` changed, fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

import django_redis_sessions
from tests.utils import installed

PACKAGE = Path(django_redis_sessions.__file__).parent
LOCALE = PACKAGE / "locale"
LANGUAGES = ["de", "es", "fr", "pt_BR"]


def msgids(catalog: str) -> set[str]:
    """The msgids (singular) of a ``.po`` or ``.pot`` text, header excluded."""
    found = set()
    for entry in re.findall(r'^msgid ((?:".*"\n)+)', catalog, re.M):
        text = "".join(re.findall(r'"(.*)"', entry))
        if text:
            found.add(text)
    return found


def test_every_language_is_shipped_with_its_compiled_catalog() -> None:
    shipped = sorted(p.parent.parent.name for p in LOCALE.glob("*/LC_MESSAGES/*.mo"))
    assert shipped == LANGUAGES
    for language in LANGUAGES:
        assert (LOCALE / language / "LC_MESSAGES" / "django.po").is_file()


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_catalog_translates_every_string_of_the_template(language: str) -> None:
    msgfmt = installed("msgfmt", "gettext")
    po = LOCALE / language / "LC_MESSAGES" / "django.po"
    template = msgids((LOCALE / "django.pot").read_text())

    assert msgids(po.read_text()) == template
    result = subprocess.run(
        [msgfmt, "--check", "--statistics", "-o", "/dev/null", str(po)],
        capture_output=True,
        text=True,
        check=True,
    )
    # No "fuzzy" and no "untranslated" figure: every string is translated.
    assert result.stderr.strip() == f"{len(template)} translated messages."


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_shipped_mo_is_what_msgfmt_makes_of_its_po(
    language: str, tmp_path: Path
) -> None:
    msgfmt = installed("msgfmt", "gettext")
    directory = LOCALE / language / "LC_MESSAGES"
    fresh = tmp_path / "django.mo"

    subprocess.run([msgfmt, "-o", str(fresh), str(directory / "django.po")], check=True)

    assert (directory / "django.mo").read_bytes() == fresh.read_bytes(), (
        f"Recompile: msgfmt -o {language}/LC_MESSAGES/django.mo "
        f"{language}/LC_MESSAGES/django.po"
    )


def test_the_template_holds_every_string_the_code_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed("xgettext", "gettext")
    copy = tmp_path / "django_redis_sessions"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("locale", "*.pyc"))
    (copy / "locale").mkdir()
    monkeypatch.chdir(copy)

    call_command("makemessages", locale=["de"], keep_pot=True, verbosity=0)

    fresh = msgids((copy / "locale" / "django.pot").read_text())
    assert fresh == msgids((LOCALE / "django.pot").read_text()), (
        "Run makemessages -l de -l es -l fr -l pt_BR --keep-pot --no-location "
        "in django_redis_sessions/, translate, and compile."
    )


@pytest.mark.django_db
def test_the_page_speaks_german_with_times_from_djangos_own_words(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    from django.contrib.auth.models import User

    settings.LANGUAGE_CODE = "de"
    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    alice = User.objects.create_user("alice", password="x")
    laptop, phone = Client(), Client(HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64)")
    for client in (laptop, phone):
        client.get(f"/login/?id={alice.pk}")

    html = laptop.get("/account/sessions/").content.decode()

    assert '<html lang="de">' in html
    for german in (
        '<h1 id="sessions-heading">Ihre Sitzungen</h1>',
        "IP-Adresse bei der Anmeldung",
        "Dieses Gerät",
        "Sitzung beenden",
        "Abmelden",
        "Alle anderen Sitzungen beenden",
        "Ein Browser unter Linux",
    ):
        assert german in html
    # Django's humanize words, whole: no English "ago" or "in" around them.
    assert ">jetzt</time>" in html  # signed in a moment ago; active now
    # SESSION_COOKIE_AGE, two weeks, less the moments since the login.
    assert re.search(">(2\xa0Wochen|1\xa0Woche, 6\xa0Tage) von jetzt an</time>", html)
    for english in ("Your sessions", "This device", "End session", "ago", "weeks"):
        assert english not in html
