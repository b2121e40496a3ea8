"""The "Your sessions" page in a real browser: headless Chromium under Selenium.

Marked ``browser``, which the default run deselects: run it with
``python runtests.py -m browser`` (or ``tox -e browser``). It needs Debian's
``chromium`` and ``chromium-driver`` and the ``browser`` extra (Selenium).
Where one is missing the test is skipped, naming it, except in CI
(``CI=true``), where a browser test that cannot run is a failure.
"""

from __future__ import annotations

import importlib
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
    # A small window: the screenshot in the README is taken at this size.
    "--window-size=1000,540",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]

#: Chromium's own User-Agent on Linux, as the page names it.
CHROME_ON_LINUX = "Chrome on Linux"


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
def test_a_user_ends_the_session_of_another_browser_which_is_then_logged_out(
    chrome: Callable[..., WebDriver],
    live_server: Any,
    session_redis: dict[str, Any],
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

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

    laptop.get(live_server.url + PAGE)
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
    assert laptop.save_screenshot(str(tmp_path / "sessions-page.png"))

    other_row.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(laptop, 10).until(expected_conditions.staleness_of(other_row))
    assert laptop.current_url == live_server.url + PAGE
    messages = laptop.find_element(By.CSS_SELECTOR, ".messages").text
    assert messages == "Ended that session: it is logged out."
    rows = laptop.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [row.get_attribute("class") for row in rows] == ["current"]
    assert laptop.save_screenshot(str(tmp_path / "sessions-page-ended.png"))

    # The other browser's next request: anonymous, sent to log in, cookie gone.
    other.get(live_server.url + PAGE)
    assert other.current_url == f"{live_server.url}/login/?next={PAGE}"
    assert other.find_element(By.TAG_NAME, "body").text.startswith("Anonymous")
    assert other.get_cookie("sessionid") is None
    # This one is still logged in.
    laptop.get(live_server.url + PAGE)
    assert len(laptop.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
