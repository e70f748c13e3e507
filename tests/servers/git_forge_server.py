#!/usr/bin/env python3
"""A Git hosting service for Dray's tests: smart HTTP Git (CGI-run `git http-backend`, basic
auth `user:TOKEN`) and the part of five services' REST APIs the pull request steps call, all on
the same bare repositories, so pushes and merges are real Git.

    git_forge_server.py <repos-root> <token>

No hosted service is reachable here; this plays the documented subset Dray uses:
  GitHub     /api/v3/repos/O/R/pulls[/N[/merge]], /issues/N/labels    Authorization: Bearer T
  GitLab     /api/v4/projects/G%2FR/merge_requests[/IID[/merge]]      PRIVATE-TOKEN: T
  Gitea      /api/v1/repos/O/R/pulls[/N[/merge]], /labels             Authorization: token T
  Bitbucket  /2.0/repositories/W/R/pullrequests[/N[/merge]], /commit/H Authorization: Bearer T
  Azure      /ORG/PROJ/_apis/git/repositories/R/pullrequests[/N]      Basic base64(":T")
Repositories live at ROOT/O/R.git (GitLab: ROOT/G/.../R.git; Azure: ROOT/ORG/PROJ/_git/R).
The test steers pull requests with POST /_test/{merge,close,set} (JSON {repo, number, ...}).

Prints 'listening on 127.0.0.1:<port>' once it serves.
"""
import base64
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

root, token = sys.argv[1], sys.argv[2]
lock = threading.Lock()
# repo dir -> list of pull requests (dicts)
pulls = {}
# Gitea's labels, by ID.
gitea_labels = {1: "promotion", 2: "prod"}
# Every REST request: (method, path, json body), for the test to read at /_test/requests.
requests_seen = []
# Commits made through GitHub's Git data API (signed by "GitHub", as GitHub does).
verified = []


def git(repo, *args, input=None):
    p = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, input=input,
                       env=dict(os.environ, GIT_AUTHOR_NAME="Forge", GIT_AUTHOR_EMAIL="forge@test",
                                GIT_COMMITTER_NAME="Forge", GIT_COMMITTER_EMAIL="forge@test"))
    return p.returncode, p.stdout.strip()


def head(repo, branch):
    code, out = git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
    return out if code == 0 else None


def conflicts(repo, pr):
    base, tip = head(repo, pr["target"]), head(repo, pr["source"])
    code, _ = git(repo, "merge-tree", "--write-tree", base, tip)
    return code != 0


def do_merge(repo, pr, squash=False):
    base, tip = head(repo, pr["target"]), head(repo, pr["source"])
    code, tree = git(repo, "merge-tree", "--write-tree", base, tip)
    if code != 0:
        return None
    tree = tree.splitlines()[0]
    parents = ["-p", base] if squash else ["-p", base, "-p", tip]
    _, commit = git(repo, "commit-tree", tree, *parents, "-m",
                    f"Merge pull request #{pr['number']} from {pr['source']}")
    code, _ = git(repo, "update-ref", f"refs/heads/{pr['target']}", commit, base)
    if code != 0:
        return None
    pr.update(state="merged", merge_commit=commit, merged_at=time.time())
    return commit


def find(repo, number):
    for pr in pulls.get(repo, []):
        if pr["number"] == number:
            return pr
    return None


def open_pr(repo, source, target, title, body, labels):
    if head(repo, source) is None or head(repo, target) is None:
        return None
    prs = pulls.setdefault(repo, [])
    pr = dict(number=len(prs) + 1, source=source, target=target, title=title, body=body,
              labels=labels, state="open", merge_commit=None, merged_at=None, draft=False,
              blocked=False, created=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
    prs.append(pr)
    return pr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().strip().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status, value=None, raw=None, headers=()):
        out = raw if raw is not None else (b"" if value is None else json.dumps(value).encode())
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if raw is None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        return True  # handled: a route returns what this returns

    def _git(self, body):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic ") or \
                base64.b64decode(auth[6:]).decode().split(":", 1)[-1] != token:
            return self._send(401, raw=b"", headers=[("WWW-Authenticate", 'Basic realm="git"')])
        url = urlsplit(self.path)
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=self.command, PATH_INFO=unquote(url.path),
                   QUERY_STRING=url.query or "", CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   REMOTE_ADDR=self.client_address[0], GATEWAY_INTERFACE="CGI/1.1",
                   SERVER_PROTOCOL="HTTP/1.1", REMOTE_USER="git", CONTENT_LENGTH=str(len(body)))
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head_, sep, out = p.stdout.partition(b"\r\n\r\n")
        if not sep:
            head_, _, out = p.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head_.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self._send(status, raw=out, headers=headers)

    def _authorized(self, provider):
        h = self.headers
        if provider == "github":
            return h.get("Authorization") == f"Bearer {token}"
        if provider == "gitlab":
            return h.get("PRIVATE-TOKEN") == token
        if provider == "gitea":
            return h.get("Authorization") == f"token {token}"
        if provider == "bitbucket":
            return h.get("Authorization") == f"Bearer {token}"
        if provider == "azure":
            expected = "Basic " + base64.b64encode(f":{token}".encode()).decode()
            return h.get("Authorization") == expected
        return False

    def _handle(self):
        body = self._body() if self.command in ("POST", "PUT", "PATCH") else b""
        url = urlsplit(self.path)
        path = url.path
        if path.endswith(("/info/refs", "/git-upload-pack", "/git-receive-pack")):
            return self._git(body)
        data = json.loads(body) if body.strip() else {}
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with lock:
            if path.startswith("/_test/"):
                return self._test(path, data)
            requests_seen.append({"method": self.command, "path": path, "query": query,
                                  "body": data})
            parts = [unquote(p) for p in path.strip("/").split("/")]
            for provider, route in (("github", self._github), ("gitlab", self._gitlab),
                                    ("gitea", self._gitea), ("bitbucket", self._bitbucket),
                                    ("azure", self._azure)):
                handled = route(parts, query, data, provider)
                if handled is not None:
                    return handled
            return self._send(404, {"message": "Not Found"})

    # -- the test's controls ----------------------------------------------------------------
    def _test(self, path, data):
        if path == "/_test/requests":
            return self._send(200, requests_seen)
        if path == "/_test/verified":
            return self._send(200, verified)
        repo = os.path.join(root, data["repo"])
        pr = find(repo, data["number"])
        if pr is None:
            return self._send(404, {"message": "no such pull request"})
        if path == "/_test/merge":
            return self._send(200 if do_merge(repo, pr) else 409, {"commit": pr["merge_commit"]})
        if path == "/_test/close":
            pr["state"] = "closed"
        elif path == "/_test/set":
            pr.update({k: v for k, v in data.items() if k in ("draft", "blocked")})
        return self._send(200, {})

    def _web(self, *rest):
        return f"http://{self.headers.get('Host')}/" + "/".join(rest)

    def _gate(self, provider):
        if not self._authorized(provider):
            self._send(401, {"message": "Bad credentials"})
            return False
        return True

    # -- GitHub ------------------------------------------------------------------------------
    def _github(self, parts, query, data, provider):
        if parts[:3] != ["api", "v3", "repos"] or len(parts) < 6:
            return None
        if not self._gate(provider):
            return True
        owner, name = parts[3], parts[4]
        repo = os.path.join(root, owner, name + ".git")
        if not os.path.isdir(repo):
            return self._send(404, {"message": "Not Found"})

        def view(pr):
            blocked = pr["blocked"] or pr["draft"]
            return {"number": pr["number"], "html_url": self._web(owner, name, "pull", str(pr["number"])),
                    "state": "open" if pr["state"] == "open" else "closed",
                    "merged_at": pr["merged_at"] and "2026-01-01T00:00:00Z",
                    "merge_commit_sha": pr["merge_commit"] or "f" * 40,
                    "head": {"ref": pr["source"], "sha": head(repo, pr["source"])},
                    "base": {"ref": pr["target"]}, "draft": pr["draft"],
                    "mergeable": not conflicts(repo, pr) if pr["state"] == "open" else None,
                    "mergeable_state": ("draft" if pr["draft"] else "blocked" if blocked
                                        else "dirty" if conflicts(repo, pr) else "clean")
                    if pr["state"] == "open" else "unknown",
                    "title": pr["title"], "body": pr["body"], "created_at": pr["created"]}

        rest = parts[5:]
        if rest[0] in ("git", "compare"):
            return self._github_git(repo, rest, data)
        if rest[0] == "pulls" and len(rest) == 1 and self.command == "GET":
            want = query.get("head", "").split(":", 1)[-1]
            found = [view(p) for p in pulls.get(repo, []) if p["state"] == "open"
                     and (not want or p["source"] == want)
                     and p["target"] == query.get("base", p["target"])]
            return self._send(200, found)
        if rest[0] == "pulls" and len(rest) == 1 and self.command == "POST":
            pr = open_pr(repo, data["head"], data["base"], data["title"], data.get("body", ""), [])
            if pr is None:
                return self._send(422, {"message": "Validation Failed"})
            return self._send(201, view(pr))
        if rest[0] == "issues" and len(rest) == 3 and rest[2] == "labels":
            pr = find(repo, int(rest[1]))
            pr["labels"] += data["labels"]
            return self._send(200, [{"name": l} for l in pr["labels"]])
        pr = find(repo, int(rest[1])) if rest[0] == "pulls" and len(rest) >= 2 else None
        if pr is None:
            return self._send(404, {"message": "Not Found"})
        if len(rest) == 2:
            return self._send(200, view(pr))
        if rest[2] == "merge" and self.command == "PUT":
            if pr["state"] != "open" or pr["blocked"] or pr["draft"] or conflicts(repo, pr):
                return self._send(405, {"message": "Pull Request is not mergeable"})
            commit = do_merge(repo, pr, squash=data.get("merge_method") == "squash")
            return self._send(200, {"merged": True, "sha": commit, "message": "Pull Request successfully merged"})
        return self._send(404, {"message": "Not Found"})

    def _github_git(self, repo, rest, data):
        """GitHub's Git data API: refs, comparisons and commits made by GitHub."""
        def sha_of(ref):
            code, out = git(repo, "rev-parse", "--verify", "-q", ref)
            return out if code == 0 else None

        if rest[0] == "compare" and self.command == "GET":
            base, _, head = "/".join(rest[1:]).partition("...")
            if sha_of(base + "^{commit}") is None or sha_of(head + "^{commit}") is None:
                return self._send(404, {"message": "Not Found"})
            _, merge_base = git(repo, "merge-base", base, head)
            _, ahead = git(repo, "rev-list", "--count", f"{base}..{head}")
            _, behind = git(repo, "rev-list", "--count", f"{head}..{base}")
            ahead, behind = int(ahead), int(behind)
            status = ("identical" if ahead == 0 and behind == 0 else "ahead" if behind == 0
                      else "behind" if ahead == 0 else "diverged")
            _, listing = git(repo, "rev-list", "--reverse", f"{base}..{head}")
            commits = []
            for sha in [s for s in listing.splitlines() if s][:250]:
                _, info = git(repo, "show", "-s", "--format=%T%x00%P%x00%an%x00%ae%x00%B", sha)
                tree, parents, name, email, message = info.split("\x00", 4)
                commits.append({"sha": sha, "parents": [{"sha": p} for p in parents.split()],
                                "commit": {"tree": {"sha": tree}, "message": message,
                                           "author": {"name": name, "email": email}}})
            return self._send(200, {"status": status, "ahead_by": ahead, "behind_by": behind,
                                    "merge_base_commit": {"sha": merge_base}, "commits": commits})
        if rest[:2] == ["git", "ref"] and self.command == "GET":
            ref = "refs/" + "/".join(rest[2:])
            sha = sha_of(ref)
            if sha is None:
                return self._send(404, {"message": "Not Found"})
            return self._send(200, {"ref": ref, "object": {"sha": sha, "type": "commit"}})
        if rest == ["git", "commits"] and self.command == "POST":
            args = ["commit-tree", data["tree"]]
            for p in data.get("parents", []):
                args += ["-p", p]
            env = dict(os.environ, GIT_COMMITTER_NAME="GitHub", GIT_COMMITTER_EMAIL="noreply@github.com",
                       GIT_AUTHOR_NAME="forge-bot", GIT_AUTHOR_EMAIL="forge-bot@users.noreply")
            p = subprocess.run(["git", "-C", repo, *args, "-F", "-"], input=data["message"],
                               capture_output=True, text=True, env=env)
            if p.returncode != 0:
                return self._send(422, {"message": p.stderr.strip()})
            sha = p.stdout.strip()
            verified.append(sha)
            return self._send(201, {"sha": sha, "verification": {"verified": True, "reason": "valid"}})
        if rest == ["git", "refs"] and self.command == "POST":
            if sha_of(data["ref"]) is not None:
                return self._send(422, {"message": "Reference already exists"})
            git(repo, "update-ref", data["ref"], data["sha"])
            return self._send(201, {"ref": data["ref"], "object": {"sha": data["sha"]}})
        if rest[:2] == ["git", "refs"] and len(rest) > 2:
            ref = "refs/" + "/".join(rest[2:])
            current = sha_of(ref)
            if current is None:
                return self._send(422, {"message": "Reference does not exist"})
            if self.command == "DELETE":
                git(repo, "update-ref", "-d", ref)
                return self._send(204, raw=b"")
            if self.command == "PATCH":
                code, _ = git(repo, "merge-base", "--is-ancestor", current, data["sha"])
                if code != 0 and not data.get("force"):
                    return self._send(422, {"message": "Update is not a fast forward"})
                git(repo, "update-ref", ref, data["sha"])
                return self._send(200, {"ref": ref, "object": {"sha": data["sha"]}})
        return self._send(404, {"message": "Not Found"})

    # -- GitLab ------------------------------------------------------------------------------
    def _gitlab(self, parts, query, data, provider):
        if parts[:3] != ["api", "v4", "projects"] or len(parts) < 5:
            return None
        if not self._gate(provider):
            return True
        project = parts[3]
        repo = os.path.join(root, project + ".git")
        if not os.path.isdir(repo):
            return self._send(404, {"message": "404 Project Not Found"})

        def view(pr):
            state = {"open": "opened"}.get(pr["state"], pr["state"])
            status = ("draft_status" if pr["draft"] else "not_approved" if pr["blocked"]
                      else "conflict" if state == "opened" and conflicts(repo, pr) else "mergeable")
            return {"iid": pr["number"], "web_url": self._web(project, "-", "merge_requests", str(pr["number"])),
                    "state": state, "merge_commit_sha": pr["merge_commit"] if not pr.get("squash") else None,
                    "squash_commit_sha": pr["merge_commit"] if pr.get("squash") else None,
                    "sha": head(repo, pr["source"]), "source_branch": pr["source"],
                    "target_branch": pr["target"], "draft": pr["draft"],
                    "detailed_merge_status": status, "title": pr["title"],
                    "description": pr["body"], "labels": pr["labels"], "created_at": pr["created"]}

        rest = parts[4:]
        if rest == ["merge_requests"] and self.command == "GET":
            state = {"opened": "open"}.get(query.get("state"), None)
            found = [view(p) for p in pulls.get(repo, []) if (state is None or p["state"] == state)
                     and p["source"] == query.get("source_branch", p["source"])
                     and p["target"] == query.get("target_branch", p["target"])]
            return self._send(200, found)
        if rest == ["merge_requests"] and self.command == "POST":
            labels = [l for l in data.get("labels", "").split(",") if l]
            pr = open_pr(repo, data["source_branch"], data["target_branch"], data["title"],
                         data.get("description", ""), labels)
            if pr is None:
                return self._send(409, {"message": ["branch does not exist"]})
            return self._send(201, view(pr))
        pr = find(repo, int(rest[1])) if rest[0] == "merge_requests" and len(rest) >= 2 else None
        if pr is None:
            return self._send(404, {"message": "404 Not found"})
        if len(rest) == 2:
            return self._send(200, view(pr))
        if rest[2] == "merge" and self.command == "PUT":
            if pr["state"] != "open" or view(pr)["detailed_merge_status"] != "mergeable":
                return self._send(405, {"message": "405 Method Not Allowed"})
            pr["squash"] = bool(data.get("squash"))
            do_merge(repo, pr, squash=pr["squash"])
            return self._send(200, view(pr))
        return self._send(404, {"message": "404 Not found"})

    # -- Gitea -------------------------------------------------------------------------------
    def _gitea(self, parts, query, data, provider):
        if parts[:3] != ["api", "v1", "repos"] or len(parts) < 6:
            return None
        if not self._gate(provider):
            return True
        owner, name = parts[3], parts[4]
        repo = os.path.join(root, owner, name + ".git")
        if not os.path.isdir(repo):
            return self._send(404, {"message": "The target couldn't be found."})

        def view(pr):
            return {"number": pr["number"], "html_url": self._web(owner, name, "pulls", str(pr["number"])),
                    "state": "open" if pr["state"] == "open" else "closed",
                    "merged": pr["state"] == "merged", "merge_commit_sha": pr["merge_commit"],
                    "head": {"ref": pr["source"], "sha": head(repo, pr["source"])},
                    "base": {"ref": pr["target"]},
                    "mergeable": pr["state"] == "open" and not pr["blocked"] and not conflicts(repo, pr),
                    "draft": pr["draft"], "title": pr["title"], "body": pr["body"],
                    "labels": [{"id": i, "name": gitea_labels[i]} for i in pr["labels"]],
                    "created_at": pr["created"]}

        rest = parts[5:]
        if rest == ["labels"]:
            page = int(query.get("page", "1"))
            items = [{"id": i, "name": n} for i, n in gitea_labels.items()]
            return self._send(200, items if page == 1 else [])
        if rest == ["pulls"] and self.command == "GET":
            page = int(query.get("page", "1"))
            found = [view(p) for p in pulls.get(repo, []) if query.get("state") != "open" or p["state"] == "open"]
            return self._send(200, found if page == 1 else [])
        if rest == ["pulls"] and self.command == "POST":
            if any(i not in gitea_labels for i in data.get("labels", [])):
                return self._send(422, {"message": "label does not exist"})
            pr = open_pr(repo, data["head"], data["base"], data["title"], data.get("body", ""),
                         data.get("labels", []))
            if pr is None:
                return self._send(404, {"message": "branch does not exist"})
            return self._send(201, view(pr))
        pr = find(repo, int(rest[1])) if rest[0] == "pulls" and len(rest) >= 2 else None
        if pr is None:
            return self._send(404, {"message": "The target couldn't be found."})
        if len(rest) == 2:
            return self._send(200, view(pr))
        if rest[2] == "merge" and self.command == "POST":
            if not view(pr)["mergeable"] or data.get("Do") not in ("merge", "squash"):
                return self._send(405, {"message": "Please try again later"})
            do_merge(repo, pr, squash=data["Do"] == "squash")
            return self._send(200)
        return self._send(404, {"message": "The target couldn't be found."})

    # -- Bitbucket Cloud ---------------------------------------------------------------------
    def _bitbucket(self, parts, query, data, provider):
        if parts[:2] != ["2.0", "repositories"] or len(parts) < 5:
            return None
        if not self._gate(provider):
            return True
        ws, slug = parts[2], parts[3]
        repo = os.path.join(root, ws, slug + ".git")
        if not os.path.isdir(repo):
            return self._send(404, {"type": "error", "error": {"message": "Repository not found"}})

        def view(pr):
            tip = head(repo, pr["source"])
            return {"id": pr["number"], "type": "pullrequest",
                    "links": {"html": {"href": self._web(ws, slug, "pull-requests", str(pr["number"]))}},
                    "state": {"open": "OPEN", "merged": "MERGED", "closed": "DECLINED"}[pr["state"]],
                    # Bitbucket abbreviates hashes in pull requests.
                    "merge_commit": {"hash": pr["merge_commit"][:12]} if pr["merge_commit"] else None,
                    "source": {"branch": {"name": pr["source"]}, "commit": {"hash": tip[:12] if tip else None}},
                    "destination": {"branch": {"name": pr["target"]}},
                    "draft": pr["draft"], "title": pr["title"], "description": pr["body"],
                    "created_on": pr["created"]}

        rest = parts[4:]
        if rest[0] == "commit" and len(rest) == 2:
            code, full = git(repo, "rev-parse", "--verify", "-q", rest[1] + "^{commit}")
            return self._send(200, {"hash": full}) if code == 0 else self._send(404, {})
        if rest == ["pullrequests"] and self.command == "GET":
            found = [view(p) for p in pulls.get(repo, []) if
                     query.get("state") != "OPEN" or p["state"] == "open"]
            return self._send(200, {"values": found, "pagelen": 50, "page": 1})
        if rest == ["pullrequests"] and self.command == "POST":
            pr = open_pr(repo, data["source"]["branch"]["name"], data["destination"]["branch"]["name"],
                         data["title"], data.get("description", ""), [])
            if pr is None:
                return self._send(400, {"type": "error", "error": {"message": "branch not found"}})
            return self._send(201, view(pr))
        pr = find(repo, int(rest[1])) if rest[0] == "pullrequests" and len(rest) >= 2 else None
        if pr is None:
            return self._send(404, {"type": "error", "error": {"message": "not found"}})
        if len(rest) == 2:
            return self._send(200, view(pr))
        if rest[2] == "merge" and self.command == "POST":
            if pr["state"] != "open" or pr["blocked"] or conflicts(repo, pr):
                return self._send(555, {"type": "error", "error": {"message": "cannot merge"}})
            do_merge(repo, pr, squash=data.get("merge_strategy") == "squash")
            return self._send(200, view(pr))
        return self._send(404, {"type": "error", "error": {"message": "not found"}})

    # -- Azure DevOps ------------------------------------------------------------------------
    def _azure(self, parts, query, data, provider):
        if len(parts) < 7 or parts[2:5] != ["_apis", "git", "repositories"]:
            return None
        if not self._gate(provider):
            return True
        if query.get("api-version") != "7.1":
            return self._send(400, {"message": "api-version 7.1 is required"})
        org, project, name = parts[0], parts[1], parts[5]
        repo = os.path.join(root, org, project, "_git", name)
        if not os.path.isdir(repo):
            return self._send(404, {"message": "TF401019: repository not found"})

        def view(pr):
            status = {"open": "active", "merged": "completed", "closed": "abandoned"}[pr["state"]]
            merge_status = ("queued" if pr["blocked"] else "conflicts"
                            if pr["state"] == "open" and conflicts(repo, pr) else "succeeded")
            return {"pullRequestId": pr["number"], "status": status,
                    "sourceRefName": "refs/heads/" + pr["source"],
                    "targetRefName": "refs/heads/" + pr["target"],
                    "lastMergeSourceCommit": {"commitId": head(repo, pr["source"])},
                    "lastMergeCommit": {"commitId": pr["merge_commit"] or "e" * 40},
                    "mergeStatus": merge_status, "isDraft": pr["draft"], "title": pr["title"],
                    "description": pr["body"], "labels": [{"name": l} for l in pr["labels"]],
                    "creationDate": pr["created"]}

        rest = parts[6:]
        if rest == ["pullrequests"] and self.command == "GET":
            status = query.get("searchCriteria.status")
            found = [view(p) for p in pulls.get(repo, [])
                     if (status is None or view(p)["status"] == status)
                     and "refs/heads/" + p["source"] == query.get("searchCriteria.sourceRefName", "refs/heads/" + p["source"])
                     and "refs/heads/" + p["target"] == query.get("searchCriteria.targetRefName", "refs/heads/" + p["target"])]
            return self._send(200, {"value": found, "count": len(found)})
        if rest == ["pullrequests"] and self.command == "POST":
            strip = lambda r: r[len("refs/heads/"):]
            pr = open_pr(repo, strip(data["sourceRefName"]), strip(data["targetRefName"]),
                         data["title"], data.get("description", ""),
                         [l["name"] for l in data.get("labels", [])])
            if pr is None:
                return self._send(400, {"message": "TF401398: branch not found"})
            return self._send(201, view(pr))
        pr = find(repo, int(rest[1])) if rest[0] == "pullrequests" and len(rest) == 2 else None
        if pr is None:
            return self._send(404, {"message": "TF401180: pull request not found"})
        if self.command == "GET":
            return self._send(200, view(pr))
        if self.command == "PATCH" and data.get("status") == "completed":
            if view(pr)["mergeStatus"] != "succeeded" or \
                    data.get("lastMergeSourceCommit", {}).get("commitId") != head(repo, pr["source"]):
                return self._send(409, {"message": "TF401181: the pull request cannot be completed"})
            strategy = data.get("completionOptions", {}).get("mergeStrategy")
            do_merge(repo, pr, squash=strategy == "squash")
            return self._send(200, view(pr))
        return self._send(400, {"message": "unsupported"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
