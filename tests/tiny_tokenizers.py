"""Tokenizer files for the tiny text encoders, written by the tests (no downloads): Llama-3 and
CLIP style tokenizer.json files (HunyuanVideo's encoders) and Step-Video's sentencepiece model and
BERT vocabulary, each over the words it must cover."""
import json
from pathlib import Path

LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<pad>"]


def write_llama_tokenizer(folder: Path, words) -> Path:
    """A byte-level BPE tokenizer.json with Llama-3's special tokens and "<|begin_of_text|> $A", trained
    on the official templates and `words`, plus a tokenizer_config.json naming <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from vgen.models.text.llama import PROMPT_TEMPLATES

    words = " ".join(words)
    corpus = [t["template"].format(words) for t in PROMPT_TEMPLATES.values()] * 2 + [words]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, special_tokens=LLAMA_SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "<pad>", "special": True}}))
    return folder


def write_clip_tokenizer(path: Path, words) -> Path:
    """A word-level tokenizer.json with CLIP's lowercasing, "<|startoftext|> $A <|endoftext|>", and, as
    in CLIP's vocabulary, <|endoftext|> the largest id (the legacy pooling takes the argmax id)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = list(words)
    vocab = {w: i for i, w in enumerate(words)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(words), len(words) + 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", len(words)), ("<|endoftext|>", len(words) + 1)])
    tok.save(str(path))
    return path


def write_step_tokenizers(folder: Path, captions):
    """A sentencepiece model for the tiny Step-LLM (folder/step) and a BERT vocab.txt (folder/bert),
    from the captions."""
    import sentencepiece as spm

    words = sorted({w for c in captions for w in str(c).lower().replace(",", " ").replace(".", " ").split()})
    (folder / "bert").mkdir(parents=True)
    (folder / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    (folder / "step").mkdir()
    with open(folder / "step" / "step1_chat_tokenizer.model", "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(list(captions) * 8), model_writer=f, vocab_size=40,
                                       model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)
