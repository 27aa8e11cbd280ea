"""Offline TextVQA for lmms-eval with LLaVA-1.5's prompt (question + "Reference OCR token" line + suffix) and the
official EvalAI-normalised 10-answer accuracy (``piip_llava.eval.normalize``)."""

from piip_llava.eval.normalize import vqa_accuracy


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    ocr = f"\nReference OCR token: {', '.join(doc['ocr_tokens'])}" if kwargs.get("ocr", True) else ""
    return f"{doc['question']}{ocr}{kwargs.get('post_prompt', '')}"


def process_results(doc, results):
    return {"exact_match": vqa_accuracy(results[0], list(doc["answers"]))}
