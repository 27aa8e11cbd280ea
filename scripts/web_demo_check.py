"""Ask the running web demo a question about an image in a real headless Chromium, print the answer, save a
screenshot; with --expect, exit 1 unless the answer is that.

    bash serve/launch_local.sh playground/demo/stage2 --model-name piip-llava-demo &
    python scripts/web_demo_check.py --image playground/demo/data/eval/pope/val2014/pope00000.png \\
        --question "How many shapes are there?" --expect 3 --screenshot docs/images/quickstart_web_demo.png

Uses Debian's Chromium (/usr/bin/chromium) through Playwright; nothing is downloaded.
"""

import argparse
import sys

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def ask(url: str, model: str, image: str, question: str, screenshot: str | None, chromium: str) -> str:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#chat-input textarea", timeout=60_000)
        page.locator("#model-selector input").click()
        page.locator("[role=option]", has_text=model).first.click()
        page.locator("#image-input input[type=file]").set_input_files(image)
        page.wait_for_selector("#image-input img")
        page.locator("#chat-input textarea").fill(question)
        page.locator("#send-button").click()
        page.wait_for_selector("#regenerate-button:not([disabled])", timeout=60_000)
        answer = page.locator("#chatbot [data-testid=bot]").all_inner_texts()[-1].strip()
        if screenshot:
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--model", default="piip-llava-demo")
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--expect", help="the right answer (compared case-insensitively, without a final period)")
    parser.add_argument("--screenshot", help="PNG path for a screenshot of the page after the answer")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    answer = ask(args.url, args.model, args.image, args.question, args.screenshot, args.chromium)
    print(answer)
    if args.expect is not None and answer.rstrip(".").lower() != args.expect.lower():
        print(f"expected {args.expect!r}", file=sys.stderr)
        sys.exit(1)
