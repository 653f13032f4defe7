#!/usr/bin/env bash
# The Carmic API's curl quickstart (log in, create a project, upload, process, render, download),
# unchanged except for the parameters below: the API host, the credentials, and the video's
# name, size and duration. Against the bundled emulator:
#   watchd emulator &   # prints its API URL and the seeded user
#   API=http://127.0.0.1:8765/api EMAIL=demo@carmic.local PASSWORD=Demo-pass-1 \
#     FILE=sample.mp4 DURATION=20 bash examples/quickstart.sh
# It leaves the rendered clip in ./clip.mp4. Needs curl and jq.
API="${API:-https://api.carmic.pro/api}"
EMAIL="${EMAIL:-user@example.com}"
PASSWORD="${PASSWORD:-...}"
FILE="${FILE:-podcast.mp4}"
FILE_NAME="${FILE_NAME:-$(basename "$FILE")}"
FILE_SIZE="${FILE_SIZE:-$(stat -c %s "$FILE")}"
DURATION="${DURATION:-1800}"

# ─── 1. Login ───────────────────────────────────────────────────────
ACCESS=$(curl -s $API/v1/auth/login \
  -H 'Content-Type: application/json' \
  -d '{"email":"'"$EMAIL"'","password":"'"$PASSWORD"'"}' \
  | jq -r '.data.access')
# ─── 2. Find workspace id ──────────────────────────────────────────
WS=$(curl -s $API/v1/me \
  -H "Authorization: Bearer $ACCESS" \
  | jq -r '.data.workspaces[0].id')
# ─── 3. Create project + presigned upload URL ──────────────────────
RESP=$(curl -s $API/v1/projects/create \
  -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS" \
  -H 'Content-Type: application/json' \
  -d '{
    "filename":"'"$FILE_NAME"'",
    "filesize": '"$FILE_SIZE"',
    "content_type":"video/mp4",
    "duration": '"$DURATION"',
    "language":"en",
    "video_type":"podcast"
  }')
PID=$(echo "$RESP" | jq -r '.data.project_id')
URL=$(echo "$RESP" | jq -r '.data.upload_url')
# ─── 4. PUT the video directly to R2 ───────────────────────────────
curl -X PUT --data-binary @"$FILE" -H 'Content-Type: video/mp4' "$URL"
# ─── 5. Trigger ingestion ──────────────────────────────────────────
curl -s -X POST $API/v1/projects/$PID/process \
  -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS"
# ─── 6. Poll until clips ready ─────────────────────────────────────
while : ; do
  S=$(curl -s $API/v1/projects/$PID/status \
    -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS")
  echo "$S" | jq -r '.data.current_step + " (" + (.data.progress|tostring) + "%)"'
  [ "$(echo $S | jq -r '.data.status')" = "CLIPS_READY" ] && break
  sleep 10
done
# ─── 7. List clips ─────────────────────────────────────────────────
CLIPS=$(curl -s $API/v1/projects/$PID \
  -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS")
CID=$(echo "$CLIPS" | jq -r '.data.clips[0].id')
# ─── 8. (Optional) save editor template_config — see §5.4 ──────────
# curl -X PUT .../v1/clips/$CID -d @template.json ...
# ─── 9. Render ─────────────────────────────────────────────────────
curl -s -X POST $API/v1/clips/$CID/render \
  -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS"
# ─── 10. Poll render progress + download ───────────────────────────
while : ; do
  P=$(curl -s $API/v1/clips/$CID/render-progress \
    -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS")
  echo "$P" | jq -r '.data.status + " (" + (.data.progress|tostring) + "%)"'
  [ "$(echo $P | jq -r '.data.status')" = "RENDERED" ] && break
  sleep 5
done
curl -L -o clip.mp4 $API/v1/clips/$CID/video \
  -H "Authorization: Bearer $ACCESS" -H "X-Workspace-ID: $WS"
