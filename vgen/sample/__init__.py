"""Sampling: videos from prompts with any family (vgen-sample, and validation during training).

  geometry.py      the latent to draw and the pixels it decodes to, from the sample settings
  conditioning.py  prompts -> the denoiser's named inputs, conditional and unconditional
  guidance.py      the denoiser as one compiled call, with classifier-free guidance
  sampler.py       noise per seed -> the family's sampler -> latents -> the VAE -> frames
  output.py        mp4 / png plus a json of the settings per video
"""
