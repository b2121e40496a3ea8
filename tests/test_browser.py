"""The "Your sessions" page and the admin panel in a real browser.

Headless Chromium under Selenium, at a phone's width (390 px) and a desktop's
(1280 px), in English and in German. Marked ``browser``, which the default
run deselects: run it with ``python runtests.py -m browser`` (or ``tox -e
browser``). It needs Debian's ``chromium`` and ``chromium-driver`` and the
``browser`` extra (Selenium). Where one is missing the test is skipped,
naming it, except in CI (``CI=true``), where a browser test that cannot run
is a failure. With ``UPDATE_SCREENSHOTS=1`` the screenshots the docs show
are written to ``docs/``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User

from tests.utils import FIREFOX_ON_WINDOWS, cannot_run, installed

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.browser

PAGE = "/account/sessions/"

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",  # containers give /dev/shm a few megabytes
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    # Every name but localhost fails to resolve: the browser cannot reach
    # anything but the test server, whatever Chromium would fetch on its own.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
    "--window-size=1280,800",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]

#: Chromium's own User-Agent on Linux, as the page names it (ua-parser).
CHROME_ON_LINUX = "HeadlessChrome on Linux"
#: Where ``UPDATE_SCREENSHOTS=1`` writes the screenshots of ``docs/page.rst``.
DOCS = Path(__file__).resolve().parent.parent / "docs"
PHONE = (390, 844)
DESKTOP = (1280, 800)


def screenshot(
    browser: WebDriver, name: str, tmp_path: Path, element: Any = None
) -> None:
    """Save a screenshot of the whole page (or of ``element``, with a margin).

    To docs/ with ``UPDATE_SCREENSHOTS=1``, else aside.
    """
    import base64

    directory = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    if element is None:
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
    else:
        place, size = element.location, element.size  # in the document
        clip = {
            "x": place["x"] - 16,
            "y": place["y"] - 16,
            "width": size["width"] + 32,
            "height": size["height"] + 32,
        }
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    (directory / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def fits(browser: WebDriver) -> None:
    """No horizontal scroll, and every control is within the viewport."""
    from selenium.webdriver.common.by import By

    width = browser.execute_script("return window.innerWidth")
    scroll = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= width, f"{scroll} px wide in a {width} px viewport"
    controls = browser.find_elements(By.CSS_SELECTOR, "button, a, input[type=submit]")
    assert controls
    for control in controls:
        rect = control.rect
        assert control.is_displayed(), control.text
        assert rect["x"] >= 0, control.text
        assert rect["x"] + rect["width"] <= width, control.text


def sized(browser: WebDriver, size: tuple[int, int]) -> WebDriver:
    browser.set_window_size(*size)
    # Headless Chromium has no window chrome: the viewport is the window.
    assert browser.execute_script("return window.innerWidth") == size[0]
    return browser


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Callable[..., WebDriver]]:
    """Starts Chromium instances, each with a new profile of its own."""
    try:
        webdriver: Any = importlib.import_module("selenium.webdriver")
    except ImportError:
        cannot_run("selenium is not installed: pip install -e '.[browser]'.")
    browser = installed("chromium", "chromium")
    driver = installed("chromedriver", "chromium-driver")
    started: list[WebDriver] = []

    def start(profile: str, *flags: str) -> WebDriver:
        options = webdriver.ChromeOptions()
        # Both paths given: Selenium never looks for (or downloads) a browser.
        options.binary_location = browser
        for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / profile}", *flags]:
            options.add_argument(flag)
        service = webdriver.ChromeService(executable_path=driver)
        started.append(webdriver.Chrome(options=options, service=service))
        return started[-1]

    yield start
    for instance in started:
        instance.quit()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("size", "name"), [(PHONE, "phone"), (DESKTOP, "desktop")])
def test_a_user_ends_the_session_of_another_browser_which_is_then_logged_out(
    chrome: Callable[..., WebDriver],
    live_server: Any,
    session_redis: dict[str, Any],
    tmp_path: Path,
    size: tuple[int, int],
    name: str,
) -> None:
    from selenium.webdriver.common.by import By

    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    alice = User.objects.create_user("alice", password="x")
    laptop = chrome("laptop")
    # Another User-Agent, so that each row is seen to carry its own browser's.
    other = chrome("other", f"--user-agent={FIREFOX_ON_WINDOWS}")
    for browser in (laptop, other):
        browser.get(f"{live_server.url}/login/?id={alice.pk}")
        assert browser.find_element(By.TAG_NAME, "body").text == "in"
    cookies = [browser.get_cookie("sessionid") for browser in (laptop, other)]
    keys = [cookie["value"] for cookie in cookies if cookie is not None]
    assert len(set(keys)) == 2

    sized(laptop, size).get(live_server.url + PAGE)
    fits(laptop)
    this_device, other_row = laptop.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert this_device.get_attribute("class") == "current"
    assert "This device" in this_device.text
    assert CHROME_ON_LINUX in this_device.text
    assert "127.0.0.1" in this_device.text
    assert "Firefox on Windows" in other_row.text
    assert "127.0.0.1" in other_row.text
    assert "This device" not in other_row.text
    for key in keys:
        assert key not in laptop.page_source
    button = other_row.find_element(By.TAG_NAME, "button")
    assert button.text == "End session"
    assert this_device.find_element(By.TAG_NAME, "button").text == "Log out"
    screenshot(laptop, f"sessions-page-{name}", tmp_path)

    click(laptop, button)
    assert laptop.current_url == live_server.url + PAGE
    messages = laptop.find_element(By.CSS_SELECTOR, ".messages").text
    assert messages == "Ended that session: it is logged out."
    rows = laptop.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [row.get_attribute("class") for row in rows] == ["current"]
    fits(laptop)

    # The other browser's next request: anonymous, sent to log in, cookie gone.
    other.get(live_server.url + PAGE)
    assert other.current_url == f"{live_server.url}/login/?next={PAGE}"
    assert other.find_element(By.TAG_NAME, "body").text.startswith("Anonymous")
    assert other.get_cookie("sessionid") is None
    # This one is still logged in.
    laptop.get(live_server.url + PAGE)
    assert len(laptop.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1


def click(browser: WebDriver, element: Any) -> None:
    """Click, and wait until the page it leads to has loaded.

    The old document is marked, and the wait is for a complete document
    without the mark: asking the clicked element whether it went stale can
    meet the navigation halfway, where ChromeDriver answers with an
    inspector error ("Node with given id does not belong to the document")
    instead of reporting the element stale.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    browser.execute_script("window.__leaving = true;")
    element.click()

    def arrived(driver: WebDriver) -> bool:
        return bool(
            driver.execute_script(
                "return !window.__leaving && document.readyState === 'complete';"
            )
        )

    # A question asked while the old document unloads may fail: ask again.
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(arrived)


def log_in(browser: WebDriver, url: str, user: User) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/login/?id={user.pk}")
    assert browser.find_element(By.TAG_NAME, "body").text == "in"


@pytest.mark.django_db(transaction=True)
def test_on_a_phone_end_all_others_asks_first_and_this_device_logs_out(
    chrome: Callable[..., WebDriver], live_server: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    alice = User.objects.create_user("alice", password="x")
    phone, laptop, tablet = chrome("phone"), chrome("laptop"), chrome("tablet")
    for browser in (phone, laptop, tablet):
        log_in(browser, live_server.url, alice)

    sized(phone, PHONE).get(live_server.url + PAGE)
    click(phone, phone.find_element(By.LINK_TEXT, "End all other sessions"))
    assert phone.current_url == f"{live_server.url}{PAGE}end-others/"
    fits(phone)
    body = phone.find_element(By.TAG_NAME, "body").text
    assert "2 other sessions will be logged out at once:" in body
    screenshot(phone, "sessions-confirm-phone", tmp_path)
    # Asking ended nothing; Cancel goes back.
    click(phone, phone.find_element(By.LINK_TEXT, "Cancel"))
    assert phone.current_url == live_server.url + PAGE
    assert len(phone.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3

    click(phone, phone.find_element(By.LINK_TEXT, "End all other sessions"))
    click(phone, phone.find_element(By.XPATH, "//button[text()='Yes, end them']"))
    assert phone.current_url == live_server.url + PAGE
    messages = phone.find_element(By.CSS_SELECTOR, ".messages").text
    assert messages == "Ended 2 other sessions: they are logged out."
    assert len(phone.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
    for browser in (laptop, tablet):
        browser.get(live_server.url + PAGE)
        assert browser.current_url == f"{live_server.url}/login/?next={PAGE}"

    # This device logs out from the list: to LOGIN_URL, its cookie gone.
    click(phone, phone.find_element(By.XPATH, "//button[text()='Log out']"))
    assert phone.current_url == f"{live_server.url}/login/"
    assert phone.get_cookie("sessionid") is None


#: English words of the page's catalog and of Django's relative times; the
#: German page may hold none of them (names of products aside).
ENGLISH_TIME_WORDS = {"ago", "now", "from", "minute", "minutes", "hour", "hours"}
ENGLISH_TIME_WORDS |= {"day", "days", "week", "weeks", "month", "months", "year"}
SHARED_WITH_GERMAN = {"browser", "id", "ip", "in", "an"}


def english_words() -> set[str]:
    catalog = (
        Path(__file__).resolve().parent.parent
        / "django_redis_sessions"
        / "locale"
        / "django.pot"
    ).read_text()
    texts = re.findall(r'^msgid(?:_plural)? ((?:".*"\n)+)', catalog, re.M)
    words = set()
    for text in texts:
        joined = "".join(re.findall(r'"(.*)"', text))
        words |= {w.lower() for w in re.findall(r"[A-Za-z]{2,}", joined)}
    words -= {"browser", "system", "id", "count", "minutes", "when", "time"}
    return (words | ENGLISH_TIME_WORDS) - SHARED_WITH_GERMAN


@pytest.mark.django_db(transaction=True)
def test_in_german_the_page_holds_no_english(
    chrome: Callable[..., WebDriver],
    live_server: Any,
    session_redis: dict[str, Any],
    settings: Any,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    settings.LANGUAGE_CODE = "de"
    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    alice = User.objects.create_user("alice", password="x")
    laptop, other = chrome("laptop"), chrome("other", "--user-agent=Mozilla/5.0 (X11)")
    for browser in (laptop, other):
        log_in(browser, live_server.url, alice)
    other.get(live_server.url + PAGE)  # active a moment after signing in

    for path in (PAGE, f"{PAGE}end-others/"):
        sized(laptop, PHONE).get(live_server.url + path)
        text = laptop.find_element(By.TAG_NAME, "body").text
        # What a screen reader reads too: the labels of the phone's cards.
        labels = laptop.execute_script(
            "return [...document.querySelectorAll('[data-label]')]"
            ".map(e => e.dataset.label).join(' ')"
        )
        title = laptop.title
        words = {
            w.lower() for w in re.findall(r"[A-Za-z]{2,}", f"{text} {labels} {title}")
        }
        words -= {"headlesschrome", "linux"}  # the browser's own name
        assert words & english_words() == set(), path
        assert laptop.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de"
        fits(laptop)
    laptop.get(live_server.url + PAGE)
    text = laptop.find_element(By.TAG_NAME, "body").text
    assert "Ihre Sitzungen" in text
    assert "Dieses Gerät" in text
    screenshot(laptop, "sessions-page-de-phone", tmp_path)


@pytest.mark.django_db(transaction=True)
def test_staff_end_a_users_sessions_from_the_admin(
    chrome: Callable[..., WebDriver],
    live_server: Any,
    session_redis: dict[str, Any],
    tmp_path: Path,
) -> None:
    from django.contrib.admin.models import LogEntry
    from selenium.webdriver.common.by import By

    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    User.objects.create_superuser("root", password="s3cret-root")
    alice = User.objects.create_user("alice", password="x")
    laptop = chrome("laptop")
    phone = chrome("phone", f"--user-agent={FIREFOX_ON_WINDOWS}")
    for browser in (laptop, phone):
        log_in(browser, live_server.url, alice)
    keys = [
        str((b.get_cookie("sessionid") or {}).get("value")) for b in (laptop, phone)
    ]
    admin = chrome("admin")

    admin.get(
        f"{live_server.url}/admin/login/?next=/admin/auth/user/{alice.pk}/change/"
    )
    admin.find_element(By.NAME, "username").send_keys("root")
    admin.find_element(By.NAME, "password").send_keys("s3cret-root")
    click(admin, admin.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    panel = admin.find_element(By.ID, "sessions")
    rows = panel.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 2
    assert "Firefox on Windows" in panel.text
    assert CHROME_ON_LINUX in panel.text
    for key in keys:
        assert key not in admin.page_source
    screenshot(admin, "admin-sessions", tmp_path, element=panel)

    firefox = next(row for row in rows if "Firefox" in row.text)
    click(admin, firefox.find_element(By.CSS_SELECTOR, "input[value='End session']"))
    assert admin.current_url.endswith(f"/admin/auth/user/{alice.pk}/change/#sessions")
    assert (
        "Ended that session: it is logged out."
        in admin.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    panel = admin.find_element(By.ID, "sessions")
    assert len(panel.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
    phone.get(live_server.url + PAGE)
    assert phone.current_url == f"{live_server.url}/login/?next={PAGE}"

    click(admin, panel.find_element(By.CSS_SELECTOR, "input[value='End all sessions']"))
    assert (
        "Ended 1 session." in admin.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert (
        "This user has no live session." in admin.find_element(By.ID, "sessions").text
    )
    laptop.get(live_server.url + PAGE)
    assert laptop.current_url == f"{live_server.url}/login/?next={PAGE}"
    assert [e.change_message for e in LogEntry.objects.order_by("pk")] == [
        f"Ended session {firefox_id(keys[1])}.",
        "Ended 1 session.",
    ]


def firefox_id(key: str) -> str:
    from django_redis_sessions.keys import hashed_id

    return hashed_id(key)
