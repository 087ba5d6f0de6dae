"""The web GUI (server-rendered). For now: sign-in and sign-out."""
