"""Input sources: the generated corpus (synth), Da-TACOS archives and a user's audio folder."""
