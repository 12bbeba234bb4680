"""The console in a real browser: Debian's headless ``chromium`` driven by
``chromium-driver`` through selenium, against real ``twistd z4node``
processes on 127.0.0.1.

One node: log in, upload a file through the page (its progress bar and
streamed PUT), see it listed, download it with the browser and compare
the bytes. Two nodes: the cluster view shows both alive, then the killed
one dead. Screenshots of each step are kept in the test's directory under
``_trial_temp`` (their paths are printed).

Without chromium and chromedriver these tests fail, saying what to
install (CI installs both, see ``.ci/run``); they never skip.
"""

import os
import shutil
import time

from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from tests.test_cluster_processes import start_cluster

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")


class BrowserTestCase(TestCase):
    """A test with a headless chromium (``self.browser``), quit at cleanup."""

    timeout = 300
    # Generous: several engineers' test runs share this machine's 2 cores.
    wait_seconds = 60

    def setUp(self):
        binary, driver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
        if binary is None or driver is None:
            self.fail("the browser tests need Debian's chromium and chromium-driver "
                      "packages (apt-get install chromium chromium-driver)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.artifacts = os.path.abspath(self.mktemp())
        self.downloads = os.path.join(self.artifacts, "downloads")
        os.makedirs(self.downloads)
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument("--user-data-dir=" + os.path.join(self.artifacts, "profile"))
        options.add_experimental_option("prefs", {
            "download.default_directory": self.downloads,
            "download.prompt_for_download": False})
        self.browser = webdriver.Chrome(service=Service(executable_path=driver),
                                        options=options)
        self.addCleanup(self.browser.quit)
        self.screenshots = 0

    def screenshot(self, name):
        self.screenshots += 1
        path = os.path.join(self.artifacts, f"{self.screenshots:02d}-{name}.png")
        self.browser.save_screenshot(path)
        print(f"screenshot: {path}")

    def wait_for(self, check, what, refresh=False):
        """Return ``check()``'s first true answer (an exception counts as
        none yet), reloading the page between tries if ``refresh``; fail
        after ``wait_seconds``, with a screenshot of the page."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                result = check()
            except Exception as e:
                result, error = None, e
            else:
                error = None
            if result:
                return result
            if time.monotonic() > deadline:
                self.screenshot("timed-out")
                self.fail(f"{what}: not within {self.wait_seconds} s ({error!r})")
            time.sleep(0.2)
            if refresh:
                self.browser.refresh()

    def find(self, selector):
        from selenium.webdriver.common.by import By
        return self.browser.find_element(By.CSS_SELECTOR, selector)

    def log_in(self, node):
        access, secret = node.credentials()
        self.browser.get(node.endpoint + "/_z4/console")
        self.wait_for(lambda: self.find("#login"), "the login form")
        self.screenshot("login")
        self.find("#access-key").send_keys(access)
        self.find("#secret").send_keys(secret)
        self.find("#login-button").click()
        self.wait_for(lambda: self.find("#who").text == "admin", "logged in as admin")


class ConsoleBrowserTests(BrowserTestCase):
    def test_upload_list_download(self):
        node = NodeProcess(self).start()
        node.client().create_bucket(Bucket="photos")
        self.log_in(node)
        self.find("#nav-buckets").click()
        self.wait_for(lambda: self.find("a.bucket").text == "photos", "the bucket listed")
        self.find("a.bucket").click()
        self.wait_for(lambda: self.find("#upload-file"), "the bucket browser")
        # 3 MiB of bytes no text decoding could leave alone: the upload
        # streams (several reads) and comes back byte for byte.
        data = os.urandom(3 * 1024 * 1024) + bytes(range(256))
        name = "holiday snap é.bin"
        source = os.path.join(self.artifacts, name)
        with open(source, "wb") as f:
            f.write(data)
        self.find("#upload-file").send_keys(source)
        self.find("#upload-button").click()
        row = f'tr[data-key="{name}"]'
        self.wait_for(lambda: self.find(row), "the uploaded file listed")
        self.screenshot("uploaded")
        self.assertIn("3.0 MiB", self.find(row).text)
        self.assertEqual(node.client().get_object(Bucket="photos", Key=name)["Body"].read(),
                         data)

        self.find(row + " a.download").click()
        downloaded = os.path.join(self.downloads, name)
        self.wait_for(lambda: os.path.exists(downloaded) and os.path.getsize(downloaded)
                      == len(data), "the download saved")
        with open(downloaded, "rb") as f:
            self.assertEqual(f.read(), data)


class ConsoleClusterBrowserTests(BrowserTestCase):
    def test_killed_node_turns_dead(self):
        nodes = start_cluster(self, 2)
        self.log_in(nodes[0])
        self.find("#nav-cluster").click()

        def state(member_id):
            return self.find(f"#member-{member_id}").get_attribute("data-state")

        self.wait_for(lambda: state("node-0") == "alive" and state("node-1") == "alive",
                      "both members alive on the cluster view", refresh=True)
        self.screenshot("cluster-alive")
        nodes[1].kill()
        self.wait_for(lambda: state("node-1") == "dead", "node-1 dead on the cluster view",
                      refresh=True)
        self.assertEqual(state("node-0"), "alive")
        self.screenshot("cluster-node-1-dead")
