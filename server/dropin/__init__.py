"""The live drop-in queue: places, takes and the board that volunteers and waiting pages see."""
